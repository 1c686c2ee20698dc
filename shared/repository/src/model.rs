//! Domain types.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A stored short link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub code: String,
    /// The normalized target: what was stored is exactly what is redirected to.
    pub target_url: String,
    pub created_at: DateTime<Utc>,
    /// The last edit; `None` until the first.
    pub updated_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The account that created it; `None` for an anonymous link.
    pub owner_id: Option<i64>,
    /// Set while an admin has disabled it: the redirect answers 410.
    pub disabled_at: Option<DateTime<Utc>>,
    pub behaviour: Behaviour,
    /// Redirects counted so far; only links with [`Behaviour::max_visits`] count them.
    pub visits: i64,
    /// Human clicks of all time (bots excluded), as the analytics worker applied them: a few
    /// seconds behind the redirects, and counted for every link, limited or not.
    pub clicks: i64,
}

impl Link {
    /// Whether the link stopped redirecting to its target at `now`, by date or by visits.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
            || self
                .behaviour
                .max_visits
                .is_some_and(|max| self.visits >= max)
    }
}

/// How a link redirects: everything the redirect service needs besides the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Behaviour {
    /// 301, 302, 307 or 308; `None`: the redirect service's default.
    pub redirect_status: Option<u16>,
    /// Merge the request's query string into the target's.
    pub forward_query: bool,
    /// Where the link sends people once expired; `None`: a 410 page.
    pub expired_url: Option<String>,
    /// Redirects the link answers before it behaves as expired; `None`: no limit.
    pub max_visits: Option<i64>,
}

impl Behaviour {
    /// Whether every redirect must be counted in PostgreSQL.
    pub fn is_limited(&self) -> bool {
        self.max_visits.is_some()
    }
}

/// What a client asks to store; validated by the create service before it gets here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLink {
    pub target_url: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// The creating key's account; `None` for an anonymous create.
    pub owner_id: Option<i64>,
    pub behaviour: Behaviour,
}

/// Whose links an operation may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Every account's, and anonymous ones (an admin).
    Any,
    /// This account's only.
    Account(i64),
}

impl Owner {
    /// Whether a link with this owner is within reach.
    pub fn covers(self, owner_id: Option<i64>) -> bool {
        match self {
            Self::Any => true,
            Self::Account(id) => owner_id == Some(id),
        }
    }

    /// The account to match in SQL; `None` matches any.
    pub(crate) fn account(self) -> Option<i64> {
        match self {
            Self::Any => None,
            Self::Account(id) => Some(id),
        }
    }
}

/// What the cache holds for a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedLink {
    /// A live link (possibly expired since it was cached; the reader checks).
    Found {
        target_url: String,
        expires_at: Option<DateTime<Utc>>,
        behaviour: Behaviour,
    },
    /// The link exists but an admin disabled it: answered 410.
    Disabled,
    /// No live link has this code (negative cache entry).
    Missing,
}

impl From<&Link> for CachedLink {
    fn from(link: &Link) -> Self {
        if link.disabled_at.is_some() {
            return Self::Disabled;
        }
        Self::Found {
            target_url: link.target_url.clone(),
            expires_at: link.expires_at,
            behaviour: link.behaviour.clone(),
        }
    }
}

/// The outcome of one bulk refill of the key pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefillReport {
    /// Keys generated and sent.
    pub generated: u64,
    /// Keys that were new and went into the pool (the rest already existed).
    pub inserted: u64,
    pub elapsed: Duration,
}

impl RefillReport {
    /// Keys added per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.inserted as f64 / secs
        } else {
            0.0
        }
    }
}

/// Where a new link's code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource<'a> {
    /// A key already claimed from the pool.
    PoolKey(&'a str),
    /// A custom alias, reserved in the same transaction.
    Alias(&'a str),
}

/// The outcome of a create carrying an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotentCreate {
    /// First use of the key: the link was created.
    Created(Link),
    /// The key was used before with the same request: its link, unchanged.
    Replayed(Link),
    /// The key was used before with a different request.
    Mismatch,
    /// Another account holds the key: answered as if nothing were there.
    HeldByOther,
}
