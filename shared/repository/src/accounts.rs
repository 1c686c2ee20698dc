//! Accounts and API keys: their types and their SQL.
//!
//! Statements here are unnamed (`query_typed`): they run once per operator action or once per
//! key per cache period, so preparing them would buy nothing, and unnamed statements work
//! through a transaction-mode connection pooler.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use crate::error::RepoError;
use crate::postgres::PgRepository;
use crate::token::{KeyDigest, MintedKey};

/// What a key may do. A key has one or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(into = "&'static str")]
pub enum Scope {
    /// Show and list links.
    LinksRead,
    /// Create, edit and delete links.
    LinksWrite,
    /// Read click analytics.
    StatsRead,
    /// Accounts, keys, and every account's links.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::LinksRead,
        Scope::LinksWrite,
        Scope::StatsRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LinksRead => "links:read",
            Self::LinksWrite => "links:write",
            Self::StatsRead => "stats:read",
            Self::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl From<Scope> for &'static str {
    fn from(scope: Scope) -> Self {
        scope.as_str()
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest account or key name, in characters (the schema checks it too).
pub const MAX_NAME_LEN: usize = 100;

/// Whether `name` may name an account or a key: 1 to [`MAX_NAME_LEN`] characters, none of
/// them control characters, not blank.
pub fn is_valid_name(name: &str) -> bool {
    let len = name.chars().count();
    (1..=MAX_NAME_LEN).contains(&len)
        && !name.trim().is_empty()
        && !name.chars().any(char::is_control)
}

/// Parses a list of scope names: at least one, each known; duplicates collapse.
pub fn parse_scopes<S: AsRef<str>>(names: &[S]) -> Option<Vec<Scope>> {
    let mut scopes = names
        .iter()
        .map(|n| Scope::parse(n.as_ref()))
        .collect::<Option<Vec<_>>>()?;
    scopes.sort_unstable();
    scopes.dedup();
    (!scopes.is_empty()).then_some(scopes)
}

/// Who owns links and keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// An API key as stored: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Requests a minute; `None` means the service default.
    pub rate_limit_per_minute: Option<u32>,
}

impl ApiKey {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// What to mint.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub account_id: i64,
    pub name: &'a str,
    pub scopes: &'a [Scope],
    pub expires_at: Option<DateTime<Utc>>,
    pub rate_limit_per_minute: Option<u32>,
}

/// A key found by its digest, with its account: all a request check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub key: ApiKey,
    pub account: Account,
}

const ACCOUNT_COLUMNS: &str = "id, name, created_at, disabled_at";
const KEY_COLUMNS: &str = "id, account_id, name, scopes, hint, created_at, expires_at, \
                           last_used_at, revoked_at, rate_limit_per_minute";

fn account_from_row(row: &Row) -> Account {
    Account {
        id: row.get("id"),
        name: row.get("name"),
        created_at: row.get("created_at"),
        disabled_at: row.get("disabled_at"),
    }
}

fn key_from_row(row: &Row) -> ApiKey {
    let scopes: Vec<String> = row.get("scopes");
    let limit: Option<i32> = row.get("rate_limit_per_minute");
    ApiKey {
        id: row.get("id"),
        account_id: row.get("account_id"),
        name: row.get("name"),
        // The CHECK constraint admits only known scopes.
        scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        hint: row.get("hint"),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        last_used_at: row.get("last_used_at"),
        revoked_at: row.get("revoked_at"),
        rate_limit_per_minute: limit.and_then(|n| u32::try_from(n).ok()),
    }
}

type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

impl PgRepository {
    async fn rows(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, RepoError> {
        let client = self.connection().await?;
        Ok(client.query_typed(sql, params).await?)
    }

    /// Creates an account. [`RepoError::NameTaken`] if the name is in use.
    pub async fn create_account(&self, name: &str) -> Result<Account, RepoError> {
        let sql = format!("INSERT INTO accounts (name) VALUES ($1) RETURNING {ACCOUNT_COLUMNS}");
        self.guarded(async {
            let client = self.connection().await?;
            match client.query_typed_one(&sql, &[(&name, Type::TEXT)]).await {
                Ok(row) => Ok(account_from_row(&row)),
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(RepoError::NameTaken)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Every account, oldest first.
    pub async fn accounts(&self) -> Result<Vec<Account>, RepoError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id");
        let rows = self.idempotent(|| self.rows(&sql, &[])).await?;
        Ok(rows.iter().map(account_from_row).collect())
    }

    pub async fn account(&self, id: i64) -> Result<Option<Account>, RepoError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&id, Type::INT8)];
        let rows = self.idempotent(|| self.rows(&sql, &params)).await?;
        Ok(rows.first().map(account_from_row))
    }

    pub async fn account_by_name(&self, name: &str) -> Result<Option<Account>, RepoError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1");
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&name, Type::TEXT)];
        let rows = self.idempotent(|| self.rows(&sql, &params)).await?;
        Ok(rows.first().map(account_from_row))
    }

    /// Disables an account (its keys stop working); `None` if there is none. Disabling twice
    /// keeps the first time.
    pub async fn disable_account(&self, id: i64) -> Result<Option<Account>, RepoError> {
        let sql = format!(
            "UPDATE accounts SET disabled_at = coalesce(disabled_at, now()) \
             WHERE id = $1 RETURNING {ACCOUNT_COLUMNS}"
        );
        let rows = self.guarded(self.rows(&sql, &[(&id, Type::INT8)])).await?;
        Ok(rows.first().map(account_from_row))
    }

    /// Mints a key for an account and stores its digest. `None` if the account does not exist.
    /// The returned [`MintedKey`] is the only copy of the key there will ever be.
    pub async fn create_api_key(
        &self,
        new: &NewApiKey<'_>,
    ) -> Result<Option<(ApiKey, MintedKey)>, RepoError> {
        let minted = MintedKey::generate();
        let digest = minted.digest().to_vec();
        let hint = minted.hint();
        let scopes: Vec<&str> = new.scopes.iter().map(|s| s.as_str()).collect();
        let limit = new
            .rate_limit_per_minute
            .map(|n| n.min(i32::MAX as u32) as i32);
        // INSERT ... SELECT: no row for an unknown account, rather than a foreign-key error.
        let sql = format!(
            "INSERT INTO api_keys \
                 (account_id, name, scopes, expires_at, digest, hint, rate_limit_per_minute) \
             SELECT id, $2, $3, $4, $5, $6, $7 FROM accounts WHERE id = $1 \
             RETURNING {KEY_COLUMNS}"
        );
        let params: [(&(dyn ToSql + Sync), Type); 7] = [
            (&new.account_id, Type::INT8),
            (&new.name, Type::TEXT),
            (&scopes, Type::TEXT_ARRAY),
            (&new.expires_at, Type::TIMESTAMPTZ),
            (&digest, Type::BYTEA),
            (&hint, Type::TEXT),
            (&limit, Type::INT4),
        ];
        let rows = self.guarded(self.rows(&sql, &params)).await?;
        Ok(rows.first().map(|row| (key_from_row(row), minted)))
    }

    /// Keys, oldest first: one account's, or everyone's.
    pub async fn api_keys(&self, account_id: Option<i64>) -> Result<Vec<ApiKey>, RepoError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys \
             WHERE $1::int8 IS NULL OR account_id = $1 ORDER BY id"
        );
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&account_id, Type::INT8)];
        let rows = self.idempotent(|| self.rows(&sql, &params)).await?;
        Ok(rows.iter().map(key_from_row).collect())
    }

    /// Revokes a key; `None` if there is none. Revoking twice keeps the first time.
    pub async fn revoke_api_key(&self, id: i64) -> Result<Option<ApiKey>, RepoError> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) \
             WHERE id = $1 RETURNING {KEY_COLUMNS}"
        );
        let rows = self.guarded(self.rows(&sql, &[(&id, Type::INT8)])).await?;
        Ok(rows.first().map(key_from_row))
    }

    /// The key with this digest and its account, revoked, expired or not: the caller decides,
    /// and caches the answer.
    #[tracing::instrument(
        name = "postgres credential",
        skip_all,
        fields(otel.kind = "client", db.system = "postgresql"),
        err(level = "warn")
    )]
    pub async fn credential(&self, digest: &KeyDigest) -> Result<Option<Credential>, RepoError> {
        const SQL: &str = "\
            SELECT k.id, k.account_id, k.name, k.scopes, k.hint, k.created_at, k.expires_at, \
                   k.last_used_at, k.revoked_at, k.rate_limit_per_minute, \
                   a.name AS account_name, a.created_at AS account_created_at, \
                   a.disabled_at AS account_disabled_at \
            FROM api_keys k JOIN accounts a ON a.id = k.account_id \
            WHERE k.digest = $1";
        let digest = digest.to_vec();
        let params: [(&(dyn ToSql + Sync), Type); 1] = [(&digest, Type::BYTEA)];
        let rows = self.idempotent(|| self.rows(SQL, &params)).await?;
        Ok(rows.first().map(|row| {
            let key = key_from_row(row);
            Credential {
                account: Account {
                    id: key.account_id,
                    name: row.get("account_name"),
                    created_at: row.get("account_created_at"),
                    disabled_at: row.get("account_disabled_at"),
                },
                key,
            }
        }))
    }

    /// Sets `last_used_at` to now on these keys; returns how many rows changed.
    pub async fn touch_api_keys(&self, ids: &[i64]) -> Result<u64, RepoError> {
        const SQL: &str = "UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)";
        let ids = ids.to_vec();
        self.guarded(async {
            let client = self.connection().await?;
            Ok(client
                .execute_typed(SQL, &[(&ids, Type::INT8_ARRAY)])
                .await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_by_their_names_only() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("Admin"), None);
        assert_eq!(
            parse_scopes(&["links:write", "links:read", "links:write"]),
            Some(vec![Scope::LinksRead, Scope::LinksWrite])
        );
        assert_eq!(parse_scopes::<&str>(&[]), None);
        assert_eq!(parse_scopes(&["links:read", "links:delete"]), None);
    }

    #[test]
    fn names_are_short_visible_text() {
        assert!(is_valid_name("ci deploys"));
        assert!(is_valid_name(&"é".repeat(MAX_NAME_LEN)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("   "));
        assert!(!is_valid_name("a\nb"));
        assert!(!is_valid_name(&"a".repeat(MAX_NAME_LEN + 1)));
    }
}
