//! What clients send to create a link, and how it becomes a [`NewLink`]. Single creates, bulk
//! creates and imports all go through [`CreateLink::validate`], so a rule lives in one place.

use chrono::{DateTime, Utc};
use kurz_repository::{Behaviour, NewLink};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::validate::{
    UrlPolicy, ValidationError, check_alias, check_max_visits, check_redirect_status,
    parse_expires_at,
};

/// `POST /api/v1/links` body. Unknown fields are refused rather than ignored, so a client
/// sending a field this version does not support learns it at once.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    /// The target: `http` or `https`, at most `KURZ_MAX_URL_LENGTH` bytes (8,192). Stored in
    /// its WHATWG-normalized form. Private addresses and blocked domains are refused.
    #[schema(example = "https://example.com/some/page")]
    pub url: String,
    /// A custom code instead of a random 7-character one; case-sensitive.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{3,64}$", example = "launch-2030")]
    pub alias: Option<String>,
    /// RFC 3339 date-time with an offset, in the future. After it the link answers 410.
    #[serde(default)]
    #[schema(format = DateTime, example = "2030-01-31T12:00:00Z")]
    pub expires_at: Option<String>,
    /// 301, 302, 307 or 308; unset: the redirect service's default.
    #[serde(default)]
    #[schema(example = 308)]
    pub redirect_status: Option<u16>,
    /// Merge the request's query string into the target's.
    #[serde(default)]
    pub forward_query: bool,
    /// Where the link sends people once expired (by date or by visits); unset: a 410 page.
    /// The same rules as `url`.
    #[serde(default)]
    #[schema(example = "https://example.com/campaign-over")]
    pub expired_url: Option<String>,
    /// Redirects the link answers (1 to 1,000,000,000,000) before it behaves as expired.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub max_visits: Option<i64>,
}

/// A create request that passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCreate {
    pub alias: Option<String>,
    pub link: NewLink,
}

impl ValidCreate {
    /// The canonical, validated request, for idempotency: retries that normalize to the same
    /// link match, and any difference in what would be stored is a mismatch.
    pub fn canonical(&self) -> serde_json::Value {
        let b = &self.link.behaviour;
        json!({
            "url": self.link.target_url,
            "alias": self.alias,
            "expires_at": self.link.expires_at,
            "redirect_status": b.redirect_status,
            "forward_query": b.forward_query,
            "expired_url": b.expired_url,
            "max_visits": b.max_visits,
        })
    }
}

impl CreateLink {
    /// Checks every field, in the order of the README's table (the URL first), and builds the
    /// link to store for `owner_id`.
    pub fn validate(
        &self,
        policy: &UrlPolicy,
        owner_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<ValidCreate, ValidationError> {
        let target_url = policy.normalize(&self.url)?;
        let expires_at = self
            .expires_at
            .as_deref()
            .map(|raw| parse_expires_at(raw, now))
            .transpose()?;
        if let Some(alias) = self.alias.as_deref() {
            check_alias(alias)?;
        }
        let behaviour = Behaviour {
            redirect_status: self
                .redirect_status
                .map(check_redirect_status)
                .transpose()?,
            forward_query: self.forward_query,
            expired_url: self
                .expired_url
                .as_deref()
                .map(|raw| policy.normalize_expired_url(raw))
                .transpose()?,
            max_visits: self.max_visits.map(check_max_visits).transpose()?,
        };
        Ok(ValidCreate {
            alias: self.alias.clone(),
            link: NewLink {
                target_url,
                expires_at,
                owner_id,
                behaviour,
            },
        })
    }
}
