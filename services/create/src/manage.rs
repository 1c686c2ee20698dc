//! Managing links once they exist: `PATCH /api/v1/links/{code}` (edit), `GET /api/v1/links`
//! (list, newest first, keyset pagination) and `GET /api/v1/links/count`.

use actix_web::{HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use kurz_repository::Scope;
use kurz_repository::listing::{Keyset, LinkEdit, LinkFilter, ListOwner, StatusFilter};
use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::{Authorized, LinksRead, LinksWrite};
use crate::error::ApiError;
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
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditLink {
    #[serde(default, deserialize_with = "not_null")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub redirect_status: Option<Option<u16>>,
    #[serde(default, deserialize_with = "not_null")]
    pub forward_query: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    pub expired_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
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

/// The query string of `GET /api/v1/links` and `/count` (which refuses `limit` and `cursor`).
/// Values are read as text and checked here, so that each bad one is named.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub q: Option<String>,
    /// `active`, `expired`, `disabled` or `all` (the default).
    #[serde(default)]
    pub status: StatusFilter,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
    /// Admins only: an account id, or `anonymous` for links created without one.
    pub account: Option<String>,
}

impl ListQuery {
    /// The filter, for `caller`: its own account's links unless an admin names another.
    fn filter(
        &self,
        caller: &Authorized<LinksRead>,
        now: DateTime<Utc>,
    ) -> Result<LinkFilter, ApiError> {
        let owner = match self.account.as_deref() {
            None => ListOwner::Account(caller.credential.account.id),
            Some(_) if !caller.credential.key.has_scope(Scope::Admin) => {
                return Err(ApiError::InsufficientScope(Scope::Admin));
            }
            Some("anonymous") => ListOwner::Anonymous,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|id| *id > 0)
                .map(ListOwner::Account)
                .ok_or_else(|| invalid("account must be an account id or `anonymous`"))?,
        };
        if let Some(q) = &self.q
            && !(1..=MAX_SEARCH_CHARS).contains(&q.chars().count())
        {
            return Err(invalid("q must be 1 to 200 characters"));
        }
        Ok(LinkFilter {
            owner,
            status: self.status,
            search: self.q.clone(),
            created_after: instant(self.created_after.as_deref(), "created_after")?,
            created_before: instant(self.created_before.as_deref(), "created_before")?,
            now,
        })
    }

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

fn instant(raw: Option<&str>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
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
#[derive(Debug, Serialize, Deserialize)]
pub struct LinkList {
    pub data: Vec<LinkView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/links/count`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LinkCount {
    pub count: i64,
}

/// `GET /api/v1/links`: the caller's links, newest first, `limit` at a time.
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
pub async fn count(
    caller: Authorized<LinksRead>,
    query: web::Query<ListQuery>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    if query.limit.is_some() || query.cursor.is_some() {
        return Err(invalid("count takes the filters only, not limit or cursor"));
    }
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
