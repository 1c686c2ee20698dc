#![doc = include_str!("../README.md")]
//! # Layout
//! - [`init`]: builds and installs the subscriber (filter, log format, optional OTLP export)
//!   and returns a [`TelemetryGuard`] that flushes spans at shutdown.
//! - [`shutdown_signal`]: what every binary waits on before it stops (SIGTERM or Ctrl-C).

use std::time::Duration;

use anyhow::Context;
use kurz_settings::{LogFormat, TelemetrySettings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

type Filtered = Layered<EnvFilter, Registry>;
type BoxedLayer = Box<dyn Layer<Filtered> + Send + Sync>;

/// Keeps the trace pipeline alive; [`TelemetryGuard::shutdown`] flushes it.
#[derive(Debug)]
#[must_use = "dropping the guard without `shutdown` loses buffered spans"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes and stops the exporter, bounded in time. The SDK's shutdown blocks, and on
    /// actix-web's single-threaded runtimes it was seen to hang, so it runs on a blocking
    /// thread with a deadline.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flush = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_secs(5))
        });
        match tokio::time::timeout(Duration::from_secs(6), flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "trace exporter shutdown failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trace exporter shutdown panicked"),
            Err(_) => tracing::warn!("trace exporter shutdown timed out"),
        }
    }
}

/// Installs the global subscriber for a binary: an `EnvFilter` from `KURZ_LOG`, human or JSON
/// lines on stdout from `KURZ_LOG_FORMAT`, and an OTLP/gRPC span exporter when
/// `KURZ_OTLP_ENDPOINT` is set. Export failures are the exporter's problem: spans are batched
/// on their own thread and dropped when the collector is away, never delaying a request.
pub fn init(
    service_name: &'static str,
    settings: &TelemetrySettings,
) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(&settings.log_filter)
        .with_context(|| format!("KURZ_LOG `{}` is not a valid filter", settings.log_filter))?;
    let mut layers: Vec<BoxedLayer> = vec![fmt_layer(settings.log_format)];
    let provider = match &settings.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.as_str())
                .with_timeout(Duration::from_secs(3))
                .build()
                .context("building the OTLP span exporter")?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service_name).build())
                .build();
            let tracer = provider.tracer(service_name);
            layers.push(tracing_opentelemetry::layer().with_tracer(tracer).boxed());
            Some(provider)
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init()
        .context("installing the tracing subscriber")?;
    Ok(TelemetryGuard { provider })
}

fn fmt_layer(format: LogFormat) -> BoxedLayer {
    let layer = tracing_subscriber::fmt::layer();
    match format {
        LogFormat::Json => layer
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        // Colours only on a terminal: escape codes make log files unreadable.
        LogFormat::Human => layer
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
    }
}

/// Resolves on SIGTERM (what orchestrators send) or Ctrl-C (what people press).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}
