//! `kurz-keypool`: keeps the pool of unused keys full, and applies migrations.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kurz_keypool::admin::{AccountCommand, KeyCommand};
use kurz_keypool::{Application, RefillOutcome, Settings, Worker};
use kurz_repository::PgRepository;
use kurz_settings::{RedisSettings, Source};
use kurz_telemetry::LogTo;

#[derive(Parser)]
#[command(
    version,
    about = "Kurz key-pool worker: keeps unused random keys ready in PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Refill the pool whenever it runs low, until SIGTERM or Ctrl-C (the default).
    Run,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Wait until the schema is at least this build's (an init container's job), then exit.
    WaitForSchema {
        /// Give up (exit 1) after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// One refill step, then exit: up to the high watermark, or exactly --count new keys.
    Refill {
        #[arg(long)]
        count: Option<u64>,
    },
    /// Manage accounts (create, list, disable).
    #[command(subcommand)]
    Accounts(AccountCommand),
    /// Manage API keys (create, list, revoke). On a fresh database this makes the first admin
    /// key: `kurz-keypool api-keys create --account ops --name bootstrap --scope admin`.
    #[command(subcommand, name = "api-keys")]
    ApiKeys(KeyCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let source = Source::from_env();
    let settings = Settings::from_source(&source).context("reading settings")?;
    let command = cli.command.unwrap_or(Command::Run);
    // Only `run` is a server; the other commands print their result on stdout.
    let log_to = match command {
        Command::Run => LogTo::Stdout,
        _ => LogTo::Stderr,
    };
    let telemetry = kurz_telemetry::init_logging_to("kurz-keypool", &settings.telemetry, log_to)?;
    // A variable no setting reads is most often a typo, which would otherwise go unnoticed.
    let unread = source.unread(&Settings::variables());
    if !unread.is_empty() {
        tracing::warn!(
            variables = ?unread,
            "set but not read by kurz-keypool: a typo, or another service's?"
        );
    }
    let result = match command {
        Command::Migrate => kurz_repository::postgres::migrate(&settings.database)
            .await
            .context("applying migrations"),
        Command::WaitForSchema { timeout_secs } => {
            kurz_keypool::schema::wait_for_schema(
                &settings.database,
                std::time::Duration::from_secs(timeout_secs),
            )
            .await
        }
        Command::Refill { count } => refill(&settings, count).await,
        Command::Run => run(&settings).await,
        Command::Accounts(cmd) => {
            let (repo, redis) = admin_tools(&settings).await?;
            kurz_keypool::admin::accounts(&repo, &redis, cmd).await
        }
        Command::ApiKeys(cmd) => {
            let (repo, redis) = admin_tools(&settings).await?;
            kurz_keypool::admin::keys(&repo, &redis, cmd).await
        }
    };
    telemetry.shutdown().await;
    result
}

async fn run(settings: &Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    tracing::info!(metrics_port = app.port(), "kurz-keypool running");
    app.run_until_stopped(kurz_telemetry::shutdown_signal())
        .await
        .context("serving metrics")
}

/// The database (schema checked) and the Redis settings, for announcing revocations.
async fn admin_tools(settings: &Settings) -> anyhow::Result<(PgRepository, RedisSettings)> {
    let repo = PgRepository::new(&settings.database, "kurz-admin")?;
    repo.check_schema()
        .await
        .context("checking the database schema")?;
    let redis = RedisSettings::from_source(&Source::from_env()).context("reading settings")?;
    Ok((repo, redis))
}

async fn refill(settings: &Settings, count: Option<u64>) -> anyhow::Result<()> {
    let worker = Worker::build(settings)
        .await
        .context("starting the worker")?;
    match count {
        Some(count) => {
            worker.add_keys(count).await.context("adding keys")?;
        }
        None => {
            if let RefillOutcome::Sufficient = worker.refill_once().await.context("refilling")? {
                tracing::info!("key pool already at or above its low watermark");
            }
        }
    }
    Ok(())
}
