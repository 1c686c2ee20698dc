//! Managing links once they exist: `PATCH /api/v1/links/{code}` (edit), `GET /api/v1/links`
//! (list, newest first, keyset pagination) and `GET /api/v1/links/count`.

use actix_web::{HttpResponse, get, patch, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use kurz_repository::Scope;
use kurz_repository::listing::{Keyset, LinkEdit, LinkFilter, ListOwner, StatusFilter};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Authorized, LinksRead, LinksWrite};
use crate::error::ApiError;
use crate::openapi::errors;
use crate::routes::{LinkView, State, replace_everywhere};
use crate::validate::{
    UrlPolicy, ValidationError, check_max_visits, check_redirect_status, parse_expires_at,
};

/// Links per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 20;
/// The most links one page holds: a page is one index range read, and this keeps it a few
/// dozen buffers.
const MAX_LIMIT: u32 = 100;
/// Longest `q`, in characters: a search is a scan of the owner's links, and a longer needle
/// only makes each comparison dearer.
const MAX_SEARCH_CHARS: usize = 200;
/// The first byte of a cursor, so the format can change without old cursors being misread.
const CURSOR_VERSION: u8 = 1;

/// `PATCH /api/v1/links/{code}` body, with JSON Merge Patch semantics (RFC 7396): a field
/// left out keeps its value, `null` clears it, a value sets it. `url` and `forward_query`
/// cannot be cleared, so `null` there is refused (`invalid_body`) rather than read as "keep"
/// or as `false`. Unknown fields are refused too, `code` and `alias` among them: a code never
/// changes.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditLink {
    /// The new target, checked and normalized as on create. Cannot be `null`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, example = "https://example.com/new-page")]
    pub url: Option<String>,
    /// RFC 3339 date-time with an offset, in the future; `null`: never expires.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, format = DateTime, example = "2031-01-31T12:00:00Z")]
    pub expires_at: Option<Option<String>>,
    /// 301, 302, 307 or 308; `null`: the redirect service's default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u16>, example = 307)]
    pub redirect_status: Option<Option<u16>>,
    /// Merge the request's query string into the target's. Cannot be `null`: send `false`.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    pub forward_query: Option<bool>,
    /// Where the link sends people once expired, checked as `url`; `null`: a 410 page.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, example = "https://example.com/over")]
    pub expired_url: Option<Option<String>>,
    /// 1 to 1,000,000,000,000; `null`: no limit. Lowering it to or below `visits` uses the
    /// link up; `visits` is never reset.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub max_visits: Option<Option<i64>>,
}

/// A field that is present: `null` becomes `Some(None)`. (Absent fields never reach a
/// `deserialize_with`; `#[serde(default)]` makes them `None`.)
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A field that is present and must not be `null`.
fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl EditLink {
    /// Checks every given field with the create rules, in the create order (`url`,
    /// `expires_at`, `redirect_status`, `expired_url`, `max_visits`).
    pub fn validate(
        &self,
        policy: &UrlPolicy,
        now: DateTime<Utc>,
    ) -> Result<LinkEdit, ValidationError> {
        Ok(LinkEdit {
            target_url: self
                .url
                .as_deref()
                .map(|raw| policy.normalize(raw))
                .transpose()?,
            expires_at: each(self.expires_at.as_ref(), |raw| parse_expires_at(raw, now))?,
            redirect_status: each(self.redirect_status.as_ref(), |s| check_redirect_status(*s))?,
            forward_query: self.forward_query,
            expired_url: each(self.expired_url.as_ref(), |raw| {
                policy.normalize_expired_url(raw)
            })?,
            max_visits: each(self.max_visits.as_ref(), |m| check_max_visits(*m))?,
        })
    }
}

/// Applies `check` to a set value, keeping "left out" and "cleared" as they are.
fn each<T, U>(
    change: Option<&Option<T>>,
    check: impl FnOnce(&T) -> Result<U, ValidationError>,
) -> Result<Option<Option<U>>, ValidationError> {
    change
        .map(|value| value.as_ref().map(check).transpose())
        .transpose()
}

/// `PATCH /api/v1/links/{code}`: edits one's own link (an admin: any link) and answers the
/// whole link as stored. Every redirect instance follows within a second: the Redis entry is
/// overwritten and the in-process copies are dropped over pub/sub.
#[utoipa::path(
    tag = "links",
    summary = "Edit a link",
    description = "JSON Merge Patch (RFC 7396) semantics, sent as `application/json`: a field \
        left out keeps its value, `null` clears it, a value sets it. `url` and `forward_query` \
        cannot be `null`; unknown fields (`code`, `alias`) are refused, so a code never changes. \
        Values are checked with the create rules, in the same order, and a refused edit \
        changes nothing. `updated_at` moves only when a value changes. Every redirect \
        instance follows within a second. Another account's link is 404.",
    security(("bearer" = ["links:write"])),
    params(("code" = String, Path, description = "The link's code or alias.")),
    request_body = EditLink,
    responses(
        (status = 200, description = "The link as stored.", body = LinkView),
        (status = 404, response = inline(errors::NotFound)),
        (status = 422, response = inline(errors::InvalidEdit)),
    ),
)]
#[patch("/v1/links/{code}")]
pub async fn patch(
    caller: Authorized<LinksWrite>,
    code: web::Path<String>,
    body: web::Json<EditLink>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let edit = body.validate(&state.url_policy, Utc::now())?;
    if !kurz_repository::codes::is_well_formed(&code) {
        return Err(ApiError::NotFound);
    }
    let link = state
        .repo
        .update_link(&code, caller.owner(), &edit)
        .await?
        .ok_or(ApiError::NotFound)?;
    replace_everywhere(&state, &link).await;
    Ok(HttpResponse::Ok().json(state.view(link)))
}

/// `status` as the query string names it.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusParam {
    /// Every link (deleted ones never appear).
    #[default]
    All,
    /// Neither disabled nor expired.
    Active,
    /// Not disabled, and past `expires_at` or out of visits (`visits >= max_visits`).
    Expired,
    /// Disabled by an admin, expired or not.
    Disabled,
}

impl From<StatusParam> for StatusFilter {
    fn from(status: StatusParam) -> Self {
        match status {
            StatusParam::All => Self::All,
            StatusParam::Active => Self::Active,
            StatusParam::Expired => Self::Expired,
            StatusParam::Disabled => Self::Disabled,
        }
    }
}

/// A query string made of `extra` fields and the filters that `GET /api/v1/links` and
/// `/count` share, so that the filters are declared once and `/count` refuses `limit` and
/// `cursor` as the unknown parameters they are there. Values are read as text and checked by
/// [`filter_of`], so that each bad one is named.
macro_rules! filtered_query {
    ($(#[$meta:meta])* $name:ident { $($(#[$field_meta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize, IntoParams)]
        #[serde(deny_unknown_fields)]
        #[into_params(parameter_in = Query)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
            /// Found anywhere in the URL or the code, ignoring case; `%` and `_` are ordinary
            /// characters. 1 to 200 characters, without control characters.
            #[param(min_length = 1, max_length = 200)]
            pub q: Option<String>,
            /// `active`, `expired`, `disabled` or `all`.
            #[serde(default)]
            #[param(inline)]
            pub status: StatusParam,
            /// RFC 3339: links created strictly after this.
            #[param(format = DateTime)]
            pub created_after: Option<String>,
            /// RFC 3339: links created strictly before this.
            #[param(format = DateTime)]
            pub created_before: Option<String>,
            /// Admins only (others: 403): an account id, or `anonymous` for links created
            /// without one. Without it: the key's own account.
            pub account: Option<String>,
        }

        impl $name {
            fn filter(
                &self,
                caller: &Authorized<LinksRead>,
                now: DateTime<Utc>,
            ) -> Result<LinkFilter, ApiError> {
                filter_of(
                    Filters {
                        q: self.q.as_deref(),
                        status: self.status,
                        created_after: self.created_after.as_deref(),
                        created_before: self.created_before.as_deref(),
                        account: self.account.as_deref(),
                    },
                    caller,
                    now,
                )
            }
        }
    };
}

filtered_query! {
    /// The query string of `GET /api/v1/links`.
    ListQuery {
        /// Links per page, 1 to 100 (20 by default).
        #[param(minimum = 1, maximum = 100)]
        limit: Option<u32>,
        /// `next_cursor` of the previous page, unchanged.
        cursor: Option<String>,
    }
}

filtered_query! {
    /// The query string of `GET /api/v1/links/count`.
    CountQuery {}
}

/// The shared filters of a query string, as sent.
struct Filters<'a> {
    q: Option<&'a str>,
    status: StatusParam,
    created_after: Option<&'a str>,
    created_before: Option<&'a str>,
    account: Option<&'a str>,
}

/// The filter, for `caller`: its own account's links unless an admin names another.
fn filter_of(
    sent: Filters<'_>,
    caller: &Authorized<LinksRead>,
    now: DateTime<Utc>,
) -> Result<LinkFilter, ApiError> {
    let owner = owner_of(sent.account, caller)?;
    // Control characters match no stored URL (validation refuses them), and PostgreSQL
    // refuses a NUL in text outright.
    if let Some(q) = sent.q
        && (!(1..=MAX_SEARCH_CHARS).contains(&q.chars().count()) || q.chars().any(char::is_control))
    {
        return Err(invalid(
            "q must be 1 to 200 characters, without control characters",
        ));
    }
    Ok(LinkFilter {
        owner,
        status: sent.status.into(),
        search: sent.q.map(str::to_owned),
        created_after: instant(sent.created_after, "created_after")?,
        created_before: instant(sent.created_before, "created_before")?,
        now,
    })
}

/// Whose links `account` (a query parameter) names for `caller`: its own account's when left
/// out; another account's, or the anonymous links, only for an admin (others: 403).
pub(crate) fn owner_of<S>(
    account: Option<&str>,
    caller: &Authorized<S>,
) -> Result<ListOwner, ApiError> {
    match account {
        None => Ok(ListOwner::Account(caller.credential.account.id)),
        Some(_) if !caller.credential.key.has_scope(Scope::Admin) => {
            Err(ApiError::InsufficientScope(Scope::Admin))
        }
        Some("anonymous") => Ok(ListOwner::Anonymous),
        Some(raw) => raw
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .map(ListOwner::Account)
            .ok_or_else(|| invalid("account must be an account id or `anonymous`")),
    }
}

impl ListQuery {
    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(invalid("limit must be 1 to 100")),
        }
    }
}

fn invalid(message: &str) -> ApiError {
    ApiError::InvalidQuery(message.to_owned())
}

pub(crate) fn instant(raw: Option<&str>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(raw)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::InvalidQuery(format!(
                    "{name} must be an RFC 3339 date-time such as 2030-01-31T12:00:00Z"
                ))
            })
    })
    .transpose()
}

/// One page of `GET /api/v1/links`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkList {
    pub data: Vec<LinkView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    #[schema(example = "AQAGNn9LTPdOAAAAAAAAAS8")]
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/links/count`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkCount {
    pub count: i64,
}

/// `GET /api/v1/links`: the caller's links, newest first, `limit` at a time.
#[utoipa::path(
    tag = "links",
    summary = "List links",
    description = "The key's own account's links (an admin's too, unless it names `account`), \
        newest first, `limit` at a time. Pass `next_cursor` as `cursor` until it is `null`: \
        each link that exists throughout is listed exactly once, whatever is created or \
        deleted meanwhile. Deleted links never appear. A page costs the same wherever the \
        cursor points; `q` and rare `status` values read past what they skip.",
    security(("bearer" = ["links:read"])),
    params(ListQuery),
    responses(
        (status = 200, description = "One page.", body = LinkList),
        (status = 400, response = inline(errors::BadCursor)),
        (status = 422, response = inline(errors::SearchTooBroad)),
    ),
)]
#[get("/v1/links")]
pub async fn list(
    caller: Authorized<LinksRead>,
    query: web::Query<ListQuery>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let now = Utc::now();
    let filter = query.filter(&caller, now)?;
    let limit = query.limit()?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let page = state.repo.list_links(&filter, after, limit).await?;
    Ok(HttpResponse::Ok().json(LinkList {
        data: page
            .links
            .into_iter()
            .map(|link| state.view_at(link, now))
            .collect(),
        next_cursor: page.next.as_ref().map(encode_cursor),
    }))
}

/// `GET /api/v1/links/count`: how many links the same filters keep.
#[utoipa::path(
    tag = "links",
    summary = "Count links",
    description = "How many links the filters of `GET /api/v1/links` keep. Reads every \
        matching link: it costs in proportion to the account's links, and one that runs past \
        2 s is 422 `search_too_broad`.",
    security(("bearer" = ["links:read"])),
    params(CountQuery),
    responses(
        (status = 200, description = "The count.", body = LinkCount),
        (status = 422, response = inline(errors::SearchTooBroad)),
    ),
)]
#[get("/v1/links/count")]
pub async fn count(
    caller: Authorized<LinksRead>,
    query: web::Query<CountQuery>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let filter = query.filter(&caller, Utc::now())?;
    let count = state.repo.count_links(&filter).await?;
    Ok(HttpResponse::Ok().json(LinkCount { count }))
}

/// base64url of the version byte, then `created_at` in Unix microseconds (PostgreSQL's
/// precision) and the id, each 8 bytes big-endian. Opaque to clients; not signed, since a
/// forged cursor only moves the caller's own listing.
pub fn encode_cursor(at: &Keyset) -> String {
    let mut bytes = [0u8; 17];
    bytes[0] = CURSOR_VERSION;
    bytes[1..9].copy_from_slice(&at.created_at.timestamp_micros().to_be_bytes());
    bytes[9..].copy_from_slice(&at.id.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The position a cursor names; `invalid_cursor` for anything [`encode_cursor`] did not make.
pub fn decode_cursor(cursor: &str) -> Result<Keyset, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| ApiError::InvalidCursor)?;
    let [CURSOR_VERSION, rest @ ..] = bytes.as_slice() else {
        return Err(ApiError::InvalidCursor);
    };
    let (micros, id) = rest.split_at_checked(8).ok_or(ApiError::InvalidCursor)?;
    let micros = i64::from_be_bytes(micros.try_into().map_err(|_| ApiError::InvalidCursor)?);
    let id = i64::from_be_bytes(id.try_into().map_err(|_| ApiError::InvalidCursor)?);
    Ok(Keyset {
        created_at: DateTime::from_timestamp_micros(micros).ok_or(ApiError::InvalidCursor)?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused() {
        let at = Keyset {
            created_at: DateTime::from_timestamp_micros(1_764_590_400_123_456).expect("valid"),
            id: 42,
        };
        let cursor = encode_cursor(&at);
        assert_eq!(decode_cursor(&cursor).ok(), Some(at));
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        );
        let mut truncated = cursor.clone();
        truncated.pop();
        for bad in ["", "abc", "!!!!", &truncated, &format!("{cursor}AA")] {
            assert!(
                matches!(decode_cursor(bad), Err(ApiError::InvalidCursor)),
                "{bad}"
            );
        }
        let other_version = URL_SAFE_NO_PAD.encode([2u8; 17]);
        assert!(decode_cursor(&other_version).is_err());
    }

    #[test]
    fn an_edit_keeps_left_out_fields_clears_nulls_and_refuses_null_where_it_cannot_clear() {
        let edit: EditLink =
            serde_json::from_str(r#"{"expires_at": null, "max_visits": 5}"#).expect("valid");
        assert_eq!(edit.url, None);
        assert_eq!(edit.expires_at, Some(None));
        assert_eq!(edit.max_visits, Some(Some(5)));
        assert_eq!(edit.redirect_status, None);
        for refused in [
            r#"{"url": null}"#,
            r#"{"forward_query": null}"#,
            r#"{"code": "abc"}"#,
            r#"{"alias": "abc"}"#,
        ] {
            assert!(
                serde_json::from_str::<EditLink>(refused).is_err(),
                "{refused}"
            );
        }
    }
}
