//! What clients send to create a link, and how it becomes a [`NewLink`]. Single creates, bulk
//! creates and imports all go through [`CreateLink::validate`], so a rule lives in one place.

use chrono::{DateTime, Utc};
use kurz_repository::{Behaviour, NewLink};
use serde::Deserialize;
use serde_json::json;

use crate::validate::{
    UrlPolicy, ValidationError, check_alias, check_max_visits, check_redirect_status,
    parse_expires_at,
};

/// `POST /api/v1/links` body. Unknown fields are refused rather than ignored, so a client
/// sending a field this version does not support learns it at once.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    pub url: String,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    /// 301, 302, 307 or 308; unset: the redirect service's default.
    #[serde(default)]
    pub redirect_status: Option<u16>,
    /// Merge the request's query string into the target's.
    #[serde(default)]
    pub forward_query: bool,
    /// Where the link sends people once expired; unset: a 410 page.
    #[serde(default)]
    pub expired_url: Option<String>,
    /// Redirects the link answers before it behaves as expired.
    #[serde(default)]
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
