//! `kurz-analytics`: turns the click streams into rollups in PostgreSQL.

use anyhow::Context;
use kurz_analytics::{Application, Settings};
use kurz_settings::Source;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_source(&Source::from_env()).context("reading settings")?;
    let telemetry = kurz_telemetry::init("kurz-analytics", &settings.telemetry)?;
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
