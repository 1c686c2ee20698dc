//! `kurz-create`: the API that creates and manages links, and `kurz-create import`, which
//! creates them from a CSV file. One binary, so an import runs with exactly the service's
//! settings and rules, and no other artifact has to be built or shipped.

// A faster allocator than glibc's for many small, short-lived allocations across threads
// (requests, responses, futures); measured on the redirect path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kurz_create::import::ImportArgs;
use kurz_create::{Application, Settings};
use kurz_settings::Source;
use kurz_telemetry::LogTo;

#[derive(Parser)]
#[command(version, about = "Kurz create API: creates and manages short links")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API until SIGTERM or Ctrl-C (the default).
    Serve,
    /// Create links from a CSV file for an account; run it again to resume after a failure.
    Import(ImportArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let source = Source::from_env();
    let settings = Settings::from_source(&source).context("reading settings")?;
    let command = cli.command.unwrap_or(Command::Serve);
    // `import` prints its summary on stdout; its log goes beside its progress, on stderr.
    let log_to = match command {
        Command::Serve => LogTo::Stdout,
        Command::Import(_) => LogTo::Stderr,
    };
    let telemetry = kurz_telemetry::init_logging_to("kurz-create", &settings.telemetry, log_to)?;
    // A variable no setting reads is most often a typo, which would otherwise go unnoticed.
    let unread = source.unread(&Settings::variables());
    if !unread.is_empty() {
        tracing::warn!(
            variables = ?unread,
            "set but not read by kurz-create: a typo, or another service's?"
        );
    }
    let result = match command {
        Command::Serve => serve(settings).await,
        Command::Import(args) => kurz_create::import::run(&settings, &args)
            .await
            .map(|summary| println!("{summary}")),
    };
    if let Err(e) = &result {
        tracing::error!(error = ?e, "kurz-create stopped with an error");
    }
    telemetry.shutdown().await;
    result
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listen = settings.http.listen;
    let app = Application::build(settings).await?;
    tracing::info!(%listen, port = app.port(), "kurz-create listening");
    app.run_until_stopped(kurz_telemetry::shutdown_signal())
        .await
        .context("serving")
}
