//! `kurz-create`: the API that creates and manages links.

// A faster allocator than glibc's for many small, short-lived allocations across threads
// (requests, responses, futures); measured on the redirect path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use kurz_create::{Application, Settings};
use kurz_settings::Source;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_source(&Source::from_env()).context("reading settings")?;
    let telemetry = kurz_telemetry::init("kurz-create", &settings.telemetry)?;
    let listen = settings.http.listen;
    let result = async {
        let app = Application::build(settings).await?;
        tracing::info!(%listen, port = app.port(), "kurz-create listening");
        app.run_until_stopped(kurz_telemetry::shutdown_signal())
            .await
            .context("serving")
    }
    .await;
    if let Err(e) = &result {
        tracing::error!(error = ?e, "kurz-create stopped with an error");
    }
    telemetry.shutdown().await;
    result
}
