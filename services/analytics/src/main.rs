//! `kurz-analytics`: turns the click streams into rollups in PostgreSQL.

use anyhow::Context;
use kurz_analytics::{Application, Settings};
use kurz_settings::Source;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let source = Source::from_env();
    let settings = Settings::from_source(&source).context("reading settings")?;
    let telemetry = kurz_telemetry::init("kurz-analytics", &settings.telemetry)?;
    // A variable no setting reads is most often a typo, which would otherwise go unnoticed.
    let unread = source.unread(&Settings::variables());
    if !unread.is_empty() {
        tracing::warn!(
            variables = ?unread,
            "set but not read by kurz-analytics: a typo, or another service's?"
        );
    }
    let result = run(&settings).await;
    telemetry.shutdown().await;
    result
}

async fn run(settings: &Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    tracing::info!(
        metrics_port = app.port(),
        consumer = %settings.streams.consumer,
        shards = settings.streams.shards,
        "kurz-analytics running"
    );
    app.run_until_stopped(kurz_telemetry::shutdown_signal())
        .await
        .context("serving metrics")
}
