//! Operator commands for accounts and API keys: `kurz-keypool accounts ...` and
//! `kurz-keypool api-keys ...`.
//!
//! They live in this binary because it is already the operator's tool with a direct line to
//! the database (`migrate`, `refill`): on a fresh database, `kurz-keypool migrate` then
//! `kurz-keypool api-keys create --scope admin ...` makes the first admin key with the same
//! binary and the same `KURZ_DATABASE_URL`, and no other artifact has to be built or shipped.
//!
//! Output: a minted key goes alone to standard output (so scripts can capture it); everything
//! else is a table on standard output, and notes go to standard error.

use std::io::Write;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use kurz_repository::accounts::{is_valid_name, parse_scopes};
use kurz_repository::cache::CacheTtl;
use kurz_repository::invalidation::AUTH_CHANNEL;
use kurz_repository::{Account, ApiKey, NewApiKey, PgRepository, RedisCache, RepoError};
use kurz_settings::RedisSettings;

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account and print its id.
    Create {
        name: String,
        /// Succeed without change when the account exists already.
        #[arg(long)]
        exists_ok: bool,
    },
    /// List accounts.
    List,
    /// Disable an account: its keys stop working; its links keep redirecting.
    Disable {
        /// Account id or name.
        account: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Mint a key and print it, once, alone on standard output.
    Create(CreateKey),
    /// List keys (hint, name, scopes, last use; never the key).
    List {
        /// Only this account's keys (id or name).
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke a key by id.
    Revoke { id: i64 },
}

#[derive(Debug, Args)]
pub struct CreateKey {
    /// Account id or name.
    #[arg(long)]
    pub account: String,
    /// What the key is for, to tell keys apart ("ci deploys").
    #[arg(long)]
    pub name: String,
    /// links:read, links:write, stats:read or admin; repeat for several.
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
    /// RFC 3339 date-time after which the key stops working.
    #[arg(long)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests a minute for this key (default: the service's KURZ_RATE_LIMIT_PER_MINUTE).
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Revoke the account's other active keys of the same name first (key rotation).
    #[arg(long)]
    pub replace: bool,
}

/// Runs an `accounts` command.
pub async fn accounts(
    repo: &PgRepository,
    redis: &RedisSettings,
    cmd: AccountCommand,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        AccountCommand::Create { name, exists_ok } => {
            if !is_valid_name(&name) {
                bail!("an account name is 1 to 100 characters, without control characters");
            }
            let account = match repo.create_account(&name).await {
                Err(RepoError::NameTaken) if exists_ok => find_account(repo, &name).await?,
                Err(RepoError::NameTaken) => bail!("an account named {name:?} exists already"),
                other => other.context("creating the account")?,
            };
            writeln!(out, "{}", account.id)?;
        }
        AccountCommand::List => {
            writeln!(
                out,
                "{:>6}  {:<32}  {:<20}  disabled",
                "id", "name", "created"
            )?;
            for a in repo.accounts().await.context("listing accounts")? {
                writeln!(
                    out,
                    "{:>6}  {:<32}  {:<20}  {}",
                    a.id,
                    a.name,
                    day(Some(a.created_at)),
                    day(a.disabled_at)
                )?;
            }
        }
        AccountCommand::Disable { account } => {
            let id = find_account(repo, &account).await?.id;
            repo.disable_account(id)
                .await
                .context("disabling the account")?;
            announce(redis, &format!("account:{id}")).await;
            eprintln!("account {id} disabled; its keys stop working");
        }
    }
    Ok(())
}

/// Runs an `api-keys` command.
pub async fn keys(
    repo: &PgRepository,
    redis: &RedisSettings,
    cmd: KeyCommand,
) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Create(args) => create_key(repo, redis, args).await,
        KeyCommand::List { account } => {
            let account_id = match account {
                Some(a) => Some(find_account(repo, &a).await?.id),
                None => None,
            };
            let keys = repo.api_keys(account_id).await.context("listing keys")?;
            print_keys(&keys)
        }
        KeyCommand::Revoke { id } => {
            repo.revoke_api_key(id)
                .await
                .context("revoking the key")?
                .with_context(|| format!("no API key has id {id}"))?;
            announce(redis, &format!("key:{id}")).await;
            eprintln!("key {id} revoked");
            Ok(())
        }
    }
}

async fn create_key(
    repo: &PgRepository,
    redis: &RedisSettings,
    args: CreateKey,
) -> anyhow::Result<()> {
    if !is_valid_name(&args.name) {
        bail!("a key name is 1 to 100 characters, without control characters");
    }
    let scopes = parse_scopes(&args.scopes)
        .context("scopes are links:read, links:write, stats:read and admin")?;
    if args.expires_at.is_some_and(|at| at <= Utc::now()) {
        bail!("--expires-at must be in the future");
    }
    if args.rate_limit == Some(0) {
        bail!("--rate-limit must be at least 1");
    }
    let account = find_account(repo, &args.account).await?;
    if args.replace {
        let keys = repo
            .api_keys(Some(account.id))
            .await
            .context("listing keys")?;
        for old in keys
            .iter()
            .filter(|k| k.name == args.name && k.revoked_at.is_none())
        {
            repo.revoke_api_key(old.id)
                .await
                .context("revoking the old key")?;
            announce(redis, &format!("key:{}", old.id)).await;
            eprintln!(
                "revoked key {} ({}), which this one replaces",
                old.id, old.hint
            );
        }
    }
    let new = NewApiKey {
        account_id: account.id,
        name: &args.name,
        scopes: &scopes,
        expires_at: args.expires_at,
        rate_limit_per_minute: args.rate_limit,
    };
    let (key, minted) = repo
        .create_api_key(&new)
        .await
        .context("creating the key")?
        .context("the account vanished")?;
    eprintln!(
        "key {} ({}) for account {:?}; it is shown only now:",
        key.id, key.hint, account.name
    );
    println!("{}", minted.expose());
    Ok(())
}

fn print_keys(keys: &[ApiKey]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>6}  {:>7}  {:<12}  {:<24}  {:<32}  {:<10}  {:<10}  state",
        "id", "account", "hint", "name", "scopes", "last used", "expires"
    )?;
    for k in keys {
        let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        };
        writeln!(
            out,
            "{:>6}  {:>7}  {:<12}  {:<24}  {:<32}  {:<10}  {:<10}  {state}",
            k.id,
            k.account_id,
            k.hint,
            k.name,
            scopes.join(","),
            day(k.last_used_at),
            day(k.expires_at)
        )?;
    }
    Ok(())
}

fn day(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| at.format("%Y-%m-%d %H:%M").to_string(),
    )
}

/// An account by id (all digits) or name.
async fn find_account(repo: &PgRepository, which: &str) -> anyhow::Result<Account> {
    let found = match which.parse::<i64>() {
        Ok(id) => repo.account(id).await,
        Err(_) => repo.account_by_name(which).await,
    };
    found
        .context("looking the account up")?
        .with_context(|| format!("no account {which:?}"))
}

/// Tells running create instances to drop what they cached about a key or account. Best
/// effort: without Redis they drop it when their key cache TTL runs out.
async fn announce(redis: &RedisSettings, payload: &str) {
    let ttl = CacheTtl {
        found: std::time::Duration::from_secs(1),
        missing: std::time::Duration::from_secs(1),
    };
    let published = match RedisCache::new(redis, ttl) {
        Ok(cache) => cache
            .publish(AUTH_CHANNEL, payload)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = published {
        eprintln!(
            "note: could not tell running services at once ({e}); they stop accepting it within KURZ_API_KEY_CACHE_TTL_MS"
        );
    }
}
