//! `kurz-keypool wait-for-schema`: waits until the database schema is at least this build's,
//! then exits 0. Kubernetes runs it as an init container of every Kurz Deployment
//! (`infra/k8s`), so a new version's pods start only after the migration Job has run, rather
//! than crash-looping on the services' own schema check (which refuses an older schema) and
//! backing off for minutes after the Job is done. The image holds every binary of one build,
//! so this binary needs the same schema version as the service it runs before.

use std::time::Duration;

use anyhow::Context;
use kurz_repository::PgRepository;
use kurz_settings::DatabaseSettings;
use tokio::time::Instant;

/// How often the schema version is read again while it is behind (or PostgreSQL is away).
pub const POLL: Duration = Duration::from_secs(2);

/// Returns once the schema is at least this build's; fails if it is not within `timeout`.
/// Any failure to read it (PostgreSQL not up yet, the migration holding its lock) counts as
/// "not yet".
pub async fn wait_for_schema(settings: &DatabaseSettings, timeout: Duration) -> anyhow::Result<()> {
    let repo = PgRepository::new(settings, "kurz-wait-for-schema")?;
    let deadline = Instant::now() + timeout;
    loop {
        let error = match repo.check_schema().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() + POLL > deadline {
            return Err(error).with_context(|| {
                format!("the schema was not ready within {} s", timeout.as_secs())
            });
        }
        tracing::info!(error = %error, "waiting for the schema");
        tokio::time::sleep(POLL).await;
    }
}
