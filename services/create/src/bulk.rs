//! `POST /api/v1/links/bulk`: up to `KURZ_BULK_MAX_ITEMS` links in one call, committed in one
//! transaction.
//!
//! Each item is a create body, checked by the same [`CreateLink::validate`] as a single
//! create, and answered on its own: a bad item gets its 422 (or 409 for an alias) in the
//! results and never fails the others. The valid items commit together: one multi-row insert
//! for those with pool keys, one for those with aliases, where an alias already issued only
//! drops its own item (409 `alias_taken`). An alias repeated within the call is decided before
//! the database: the first item has it, later ones get 409.
//!
//! Rate limits: every item is a request of the key's limit, valid or not. The guard took one
//! for the call; the others are taken together once the call is known to be new, all or none:
//! if they do not fit, the call is 429 and nothing is created. A call with more items than
//! the key may make at once could never fit, so it is refused 422 `too_many_items` instead.
//!
//! With an `Idempotency-Key`, the canonical request and the whole response are stored in the
//! transaction of the links; a replay answers the stored response (`Idempotent-Replayed:
//! true`) and costs one request, like any call, not one per item, since it creates nothing.
//!
//! Anonymous callers are refused (401) even with `KURZ_ANONYMOUS_CREATE` on: a public shorten
//! page creates one link at a time, and a per-IP limit of 30 a minute spent 100 links per call
//! would only serve link farms.

use std::collections::HashSet;

use actix_web::http::header::ContentType;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, post, web};
use chrono::{DateTime, Utc};
use kurz_repository::bulk::{BulkCreate, BulkKey, BulkRows, Inserted};
use kurz_repository::{CachedLink, Link, NewLink, RepoError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::{Authorized, LinksWrite};
use crate::error::ApiError;
use crate::guard::FinalLimit;
use crate::openapi::errors;
use crate::request::{CreateLink, ValidCreate};
use crate::routes::{LinkView, State, idempotency_key, pool_key_error};
use crate::settings::LinkSettings;
use crate::validate::UrlPolicy;

/// `POST /api/v1/links/bulk` body. Items are kept as JSON values so that one that does not
/// match the create body is that item's `invalid_body`, not the whole call's.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// 1 to `KURZ_BULK_MAX_ITEMS` (100) create bodies. Each is checked on its own: one that is
    /// not a create body is that item's 422 `invalid_body`.
    #[schema(value_type = Vec<CreateLink>, min_items = 1, max_items = 1000)]
    pub links: Vec<Value>,
}

/// The answer: one result per item, in input order.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct BulkResponse {
    pub results: Vec<ItemResult>,
}

/// What became of one item: `status` 201 with `link`, or the item's error status with `error`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ItemResult {
    /// The item's position in `links`, from 0.
    pub index: usize,
    /// 201 (created), 422 (the item broke a rule, or is not a create body), 409 (its alias is
    /// taken, or an earlier item has it).
    #[schema(example = 201)]
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
}

/// An item's error, as `{"code", "message"}` of an error body.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ItemError {
    pub code: String,
    pub message: String,
}

impl ItemResult {
    fn refused(index: usize, error: &ApiError) -> Self {
        use actix_web::ResponseError as _;
        Self {
            index,
            status: error.status_code().as_u16(),
            link: None,
            error: Some(ItemError {
                code: error.code().to_owned(),
                message: error.to_string(),
            }),
        }
    }
}

/// The bulk route's limits, from the settings (app data of the service).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_items: usize,
    pub body_limit: usize,
}

impl Limits {
    pub fn of(links: &LinkSettings) -> Self {
        Self {
            max_items: links.bulk_max_items,
            body_limit: links.bulk_body_limit(),
        }
    }
}

/// One item of a bulk call or row of an import, after validation.
#[derive(Debug)]
pub(crate) enum Item {
    Refused(ApiError),
    Pooled(ValidCreate),
    Aliased(ValidCreate),
}

impl Item {
    /// Checks one create body with the one validator. An alias already in `aliases` (an
    /// earlier item's) is 409 `alias_taken` here, before the database: the first item has it.
    pub(crate) fn of(
        body: Result<CreateLink, ApiError>,
        policy: &UrlPolicy,
        owner: Option<i64>,
        now: DateTime<Utc>,
        aliases: &mut HashSet<String>,
    ) -> Self {
        match body.and_then(|body| Ok(body.validate(policy, owner, now)?)) {
            Err(e) => Self::Refused(e),
            Ok(valid) => match valid.alias.as_deref() {
                None => Self::Pooled(valid),
                Some(alias) if aliases.insert(alias.to_owned()) => Self::Aliased(valid),
                Some(_) => Self::Refused(ApiError::AliasTaken),
            },
        }
    }
}

/// What became of one item once its batch committed.
#[derive(Debug)]
pub(crate) enum Outcome<'a> {
    Created(&'a Link),
    Refused(&'a ApiError),
    /// The database answered fewer rows than were sent: a broken invariant (500).
    Lost,
}

impl Outcome<'_> {
    /// The error of a Lost item.
    pub(crate) fn lost() -> ApiError {
        ApiError::Internal(RepoError::Unavailable("a bulk insert lost a row".into()))
    }
}

/// The items of one transaction, in input order.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub items: Vec<Item>,
}

impl Batch {
    /// The statements' rows: each pool-key item with one of `codes`, and the aliased items.
    pub(crate) fn rows<'a>(&'a self, codes: &'a [String]) -> BatchRows<'a> {
        let mut rows = BatchRows::default();
        let mut codes = codes.iter();
        for item in &self.items {
            match item {
                Item::Pooled(valid) => {
                    if let Some(code) = codes.next() {
                        rows.pooled.push((code.as_str(), &valid.link));
                    }
                }
                Item::Aliased(ValidCreate {
                    alias: Some(alias),
                    link,
                }) => rows.aliased.push((alias.as_str(), link)),
                _ => {}
            }
        }
        rows
    }

    /// Items that need a pool key.
    pub(crate) fn pooled(&self) -> usize {
        self.items
            .iter()
            .filter(|item| matches!(item, Item::Pooled(_)))
            .count()
    }

    /// Items refused before the database.
    pub(crate) fn refused(&self) -> usize {
        self.items
            .iter()
            .filter(|item| matches!(item, Item::Refused(_)))
            .count()
    }

    /// Each item's outcome, in input order, given what the database stored.
    pub(crate) fn outcomes<'a>(
        &'a self,
        inserted: &'a Inserted,
    ) -> impl Iterator<Item = Outcome<'a>> + 'a {
        const TAKEN: ApiError = ApiError::AliasTaken;
        let (mut pooled, mut aliased) = (inserted.pooled.iter(), inserted.aliased.iter());
        self.items.iter().map(move |item| match item {
            Item::Refused(e) => Outcome::Refused(e),
            Item::Pooled(_) => pooled.next().map_or(Outcome::Lost, Outcome::Created),
            Item::Aliased(_) => match aliased.next() {
                Some(Some(link)) => Outcome::Created(link),
                Some(None) => Outcome::Refused(&TAKEN),
                None => Outcome::Lost,
            },
        })
    }
}

/// [`Batch::rows`]: owned vectors that [`BulkRows`] borrows.
#[derive(Debug, Default)]
pub(crate) struct BatchRows<'a> {
    pub pooled: Vec<(&'a str, &'a NewLink)>,
    pub aliased: Vec<(&'a str, &'a NewLink)>,
}

impl BatchRows<'_> {
    pub(crate) fn bulk(&self) -> BulkRows<'_> {
        BulkRows {
            pooled: &self.pooled,
            aliased: &self.aliased,
        }
    }
}

/// Every item of a call, validated, with the canonical request for idempotency.
#[derive(Debug)]
struct Plan {
    batch: Batch,
    /// Valid items in canonical form, refused ones as sent: the same call retried matches,
    /// and any difference in what would be stored is a mismatch.
    canonical: String,
}

impl Plan {
    fn new(raw: Vec<Value>, policy: &UrlPolicy, owner: Option<i64>, now: DateTime<Utc>) -> Self {
        let mut aliases = HashSet::new();
        let mut canonical = Vec::with_capacity(raw.len());
        let items = raw
            .into_iter()
            .map(|value| {
                let body = serde_json::from_value::<CreateLink>(value.clone())
                    .map_err(|e| ApiError::InvalidBody(e.to_string()));
                let item = Item::of(body, policy, owner, now, &mut aliases);
                canonical.push(match &item {
                    Item::Pooled(valid) | Item::Aliased(valid) => valid.canonical(),
                    Item::Refused(_) => json!({ "refused": value }),
                });
                item
            })
            .collect();
        Self {
            batch: Batch { items },
            canonical: json!({ "links": canonical }).to_string(),
        }
    }

    /// The results, in input order, given what the database stored.
    fn results(&self, state: &State, inserted: &Inserted) -> BulkResponse {
        let results = self
            .batch
            .outcomes(inserted)
            .enumerate()
            .map(|(index, outcome)| match outcome {
                Outcome::Created(link) => ItemResult {
                    index,
                    status: 201,
                    link: Some(state.view(link.clone())),
                    error: None,
                },
                Outcome::Refused(e) => ItemResult::refused(index, e),
                Outcome::Lost => ItemResult::refused(index, &Outcome::lost()),
            })
            .collect();
        BulkResponse { results }
    }
}

/// `POST /api/v1/links/bulk`.
#[utoipa::path(
    tag = "links",
    summary = "Create many short links in one call",
    description = "Up to `KURZ_BULK_MAX_ITEMS` (100) create bodies, each checked by the rules \
        of a single create and answered on its own, in input order: a bad item gets its 422 \
        (or 409 for an alias that is taken, or repeated within the call) and never fails the \
        others. The valid items commit together in one transaction. Every item is a request \
        of the key's rate limit, taken all at once or not at all: if they do not fit, the \
        call is 429 and nothing is created. Anonymous callers are refused.",
    security(("bearer" = ["links:write"])),
    params((
        "Idempotency-Key" = Option<String>, Header,
        description = "Covers the whole call: the same key with the same items answers the \
            stored response again (`Idempotent-Replayed: true`), creating nothing and costing \
            one request; with other items it is 422 `idempotency_key_reused`. Kept 24 hours.",
        min_length = 1, max_length = 255, pattern = "^[!-~]+$",
    )),
    request_body = BulkRequest,
    responses(
        (status = 200, description = "One result per item, in input order.",
            body = BulkResponse, headers(
                ("Idempotent-Replayed" = String, description = "`true` on a replay"),
            )),
        (status = 400, response = inline(errors::BadIdempotencyKey)),
        (status = 404, response = inline(errors::NotFound)),
        (status = 422, response = inline(errors::InvalidBulk)),
        (status = 503, response = inline(errors::KeyPoolEmpty)),
    ),
)]
#[post("/v1/links/bulk")]
pub async fn create_many(
    caller: Authorized<LinksWrite>,
    request: HttpRequest,
    payload: web::Payload,
    limits: web::Data<Limits>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&request)?;
    // Read as the JSON extractor reads a single create, with this route's own limit: one
    // create body per item.
    let limit = limits.body_limit;
    let body: BulkRequest = web::JsonBody::new(&request, &mut payload.into_inner(), None, true)
        .limit(limit)
        .await
        .map_err(|e| ApiError::from_json_error(&e, limit))?;
    let raw = body.links;
    let credential = &caller.credential;
    let max_items = limits
        .max_items
        .min(state.guard.key_burst(credential) as usize);
    if raw.is_empty() {
        return Err(ApiError::NoItems);
    }
    if raw.len() > max_items {
        return Err(ApiError::TooManyItems(max_items));
    }
    let owner = Some(credential.account.id);
    let plan = Plan::new(raw, &state.url_policy, owner, Utc::now());
    let key = key.map(|key| BulkKey {
        key,
        request: &plan.canonical,
        account_id: owner,
    });
    // A replay is answered before anything is taken from the rate limit or the key buffer.
    if let Some(key) = key
        && let Some(prior) = state.repo.bulk_replay(key).await?
    {
        return answer(prior);
    }
    let codes = state.keys.take_many(plan.batch.pooled()).await?;
    // The guard took one request for the call; the other items are taken now, all or none.
    let extra = u32::try_from(plan.batch.items.len() - 1).unwrap_or(u32::MAX);
    if extra > 0 {
        let charged = state.guard.charge(credential, extra).await;
        let (Ok(headers) | Err((_, headers))) = &charged;
        request.extensions_mut().insert(FinalLimit(headers.clone()));
        if let Err((refusal, _)) = charged {
            // None of these keys reached PostgreSQL: they can serve the next call.
            state.keys.give_back(codes);
            return Err(refusal);
        }
    }
    let (outcome, rendered) = store(&state, &plan, key, &codes).await?;
    let BulkCreate::Created(inserted) = outcome else {
        return answer(outcome);
    };
    warm(&state, &inserted).await;
    let body = match rendered {
        Some(body) => body,
        None => serde_json::to_string(&plan.results(&state, &inserted)).unwrap_or_default(),
    };
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(body))
}

/// One transaction for every valid item; under a key, with the rendered response stored in
/// it, which is returned too so the answer is exactly what a replay will get.
async fn store(
    state: &State,
    plan: &Plan,
    key: Option<BulkKey<'_>>,
    codes: &[String],
) -> Result<(BulkCreate, Option<String>), ApiError> {
    let rows = plan.batch.rows(codes);
    let rows = rows.bulk();
    if key.is_none() && rows.is_empty() {
        return Ok((BulkCreate::Created(Inserted::default()), None));
    }
    let mut rendered = None;
    let outcome = state
        .repo
        .create_bulk(key, rows, |inserted| {
            let body = serde_json::to_string(&plan.results(state, inserted)).unwrap_or_default();
            rendered = Some(body.clone());
            body
        })
        .await
        // Aliases that are taken are results, not errors: a conflict here is on a pool key.
        .map_err(pool_key_error)?;
    Ok((outcome, rendered))
}

/// The answer to a key that was used before.
fn answer(prior: BulkCreate) -> Result<HttpResponse, ApiError> {
    match prior {
        BulkCreate::Replayed(body) => Ok(HttpResponse::Ok()
            .content_type(ContentType::json())
            .insert_header(("Idempotent-Replayed", "true"))
            .body(body)),
        BulkCreate::Mismatch => Err(ApiError::IdempotencyKeyReused),
        // Another account's key: as if there were nothing, as for a single create.
        BulkCreate::HeldByOther => Err(ApiError::NotFound),
        // Only a new call creates; `answer` is for the others.
        BulkCreate::Created(_) => Err(ApiError::Internal(RepoError::Unavailable(
            "a bulk create answered as a replay".into(),
        ))),
    }
}

/// After the commit: the new links into Redis, and the aliases announced to the redirect
/// instances (which may hold a probe's 404), in one pipelined round trip each. Best-effort,
/// as for a single create.
async fn warm(state: &State, inserted: &Inserted) {
    let pooled = inserted.pooled.iter();
    let aliased = inserted.aliased.iter().flatten();
    let links: Vec<(&str, CachedLink)> = pooled
        .chain(aliased.clone())
        .map(|link| (link.code.as_str(), CachedLink::from(link)))
        .collect();
    if links.is_empty() {
        return;
    }
    let aliases: Vec<&str> = aliased.map(|link| link.code.as_str()).collect();
    if let Err(e) = state.cache.put_many(&links, &aliases).await {
        tracing::debug!(error = %e, "cache write after bulk create failed");
    }
}
