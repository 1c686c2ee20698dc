//! `kurz-redirect`: serves `GET /{code}`.

// A faster allocator than glibc's for many small, short-lived allocations across threads
// (requests, responses, futures); measured on the redirect path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use kurz_redirect::{Application, Settings};
use kurz_settings::Source;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let source = Source::from_env();
    let settings = Settings::from_source(&source).context("reading settings")?;
    let telemetry = kurz_telemetry::init("kurz-redirect", &settings.telemetry)?;
    // A variable no setting reads is most often a typo, which would otherwise go unnoticed.
    let unread = source.unread(&Settings::variables());
    if !unread.is_empty() {
        tracing::warn!(
            variables = ?unread,
            "set but not read by kurz-redirect: a typo, or another service's?"
        );
    }
    let listen = settings.http.listen;
    let result = async {
        let app = Application::build(settings).await?;
        tracing::info!(%listen, port = app.port(), "kurz-redirect listening");
        app.run_until_stopped(kurz_telemetry::shutdown_signal())
            .await
            .context("serving")
    }
    .await;
    if let Err(e) = &result {
        tracing::error!(error = ?e, "kurz-redirect stopped with an error");
    }
    telemetry.shutdown().await;
    result
}
