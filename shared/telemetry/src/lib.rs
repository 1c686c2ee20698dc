#![doc = include_str!("../README.md")]
//! # Layout
//! - [`init`]: builds and installs the subscriber (filter, log format, optional OTLP export),
//!   the trace-context propagator and the metrics recorder, and returns a [`TelemetryGuard`]
//!   that flushes spans at shutdown.
//! - [`metrics`]: the Prometheus recorder and the catalogue of metric names.
//! - [`shutdown_signal`]: what every binary waits on before it stops (SIGTERM or Ctrl-C).

pub mod metrics;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use kurz_settings::{LogFormat, TelemetrySettings};
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_propagator_b3::{B3Encoding, Propagator as B3Propagator};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// How long finished spans wait before a batch is sent: short enough that a trace shows up
/// in Tempo while the operator still looks, long enough to batch under load.
const EXPORT_DELAY: Duration = Duration::from_millis(500);

/// Keeps the trace pipeline alive; [`TelemetryGuard::shutdown`] flushes it.
#[derive(Debug)]
#[must_use = "dropping the guard without `shutdown` loses buffered spans"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every finished span now (tests use it instead of waiting for the batch).
    pub async fn flush(&self) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        // Blocks until the exporter thread is done; on a current-thread runtime that would
        // starve the gRPC channel it needs, hence the blocking thread.
        match tokio::task::spawn_blocking(move || provider.force_flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "trace export flush failed"),
            Err(e) => tracing::warn!(error = %e, "trace export flush panicked"),
        }
    }

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

/// Installs the global subscriber for a binary, with two outputs:
/// - log lines on stdout, human or JSON (`KURZ_LOG_FORMAT`), filtered by `KURZ_LOG`; a line
///   written inside a traced span starts with its trace and span ids;
/// - when `KURZ_OTLP_ENDPOINT` is set, spans exported over OTLP/gRPC, filtered by
///   `KURZ_TRACE_FILTER` and sampled parent-based at `KURZ_TRACE_SAMPLE_RATIO`.
///
/// Export failures are the exporter's problem: spans are batched on their own thread and
/// dropped when the collector is away or the queue is full, never delaying a request.
///
/// Also installs the W3C + B3 propagator and the Prometheus recorder ([`metrics::handle`]).
pub fn init(
    service_name: &'static str,
    settings: &TelemetrySettings,
) -> anyhow::Result<TelemetryGuard> {
    init_logging_to(service_name, settings, LogTo::Stdout)
}

/// Where [`init_logging_to`] writes log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    /// A server's log (the default).
    Stdout,
    /// A one-shot command's, whose stdout is its result (a minted key, an id, a report):
    /// a warning in between would end up in `KEY=$(kurz-keypool api-keys create ...)`.
    Stderr,
}

/// As [`init`], with log lines on `to`.
pub fn init_logging_to(
    service_name: &'static str,
    settings: &TelemetrySettings,
    to: LogTo,
) -> anyhow::Result<TelemetryGuard> {
    install_propagator();
    metrics::handle();
    let log_filter = EnvFilter::try_new(&settings.log_filter)
        .with_context(|| format!("KURZ_LOG `{}` is not a valid filter", settings.log_filter))?;
    let log = match to {
        LogTo::Stdout => fmt_layer(
            settings.log_format,
            log_filter,
            std::io::stdout,
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
        ),
        LogTo::Stderr => fmt_layer(
            settings.log_format,
            log_filter,
            std::io::stderr,
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ),
    };
    let mut layers: Vec<BoxedLayer> = vec![log];
    let provider = match &settings.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let trace_filter = EnvFilter::try_new(&settings.trace_filter).with_context(|| {
                format!(
                    "KURZ_TRACE_FILTER `{}` is not a valid filter",
                    settings.trace_filter
                )
            })?;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.as_str())
                .with_timeout(Duration::from_secs(3))
                .build()
                .context("building the OTLP span exporter")?;
            let processor = BatchSpanProcessor::builder(exporter)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(EXPORT_DELAY)
                        .build(),
                )
                .build();
            let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.trace_sample_ratio,
            )));
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_sampler(sampler)
                .with_resource(Resource::builder().with_service_name(service_name).build())
                .build();
            let tracer = provider.tracer(service_name);
            EXPORTING.store(true, Ordering::Relaxed);
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    // Each of these adds attributes and clock reads to every span, sampled
                    // or not; span names and the request's own attributes say enough, and
                    // the bench showed span bookkeeping as the price of tracing.
                    .with_location(false)
                    .with_threads(false)
                    .with_tracked_inactivity(false)
                    .with_filter(trace_filter)
                    .boxed(),
            );
            Some(provider)
        }
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .context("installing the tracing subscriber")?;
    Ok(TelemetryGuard { provider })
}

/// Set once `init` has installed span export.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans: without that, an incoming trace context has nowhere
/// to go, and the per-request work of reading it can be skipped.
pub fn exports_traces() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Accepts W3C `traceparent` and B3 (single `b3` header or the `X-B3-*` set) on the way in, and
/// writes both on the way out. W3C comes last, so it wins when a request carries both.
fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(B3Propagator::with_encoding(B3Encoding::MultipleHeader)),
        Box::new(TraceContextPropagator::new()),
    ]));
}

/// The log layer: events only. It never records spans, so log lines carry no span fields
/// (with trace export on, each line inside a span starts with its trace id, and the trace has
/// every field). Recording them was most of a redirect's CPU at the default `KURZ_LOG=info`:
/// the layer formats each request span's fields into a string when the span opens and again
/// (the JSON layer re-parses and merges them) on every `record`, for lines that are almost
/// never written: 28 to 32 µs of CPU per cached redirect against 12 to 13 µs without
/// (BENCHMARKS.md). It also lets `kurz_http::request_tracing` leave its middleware out when
/// nothing exports traces.
fn fmt_layer<W>(format: LogFormat, filter: EnvFilter, writer: W, ansi: bool) -> BoxedLayer
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter.and(filter_fn(|metadata| metadata.is_event()));
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Json => layer
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .map_event_format(|json| WithTraceId {
                inner: json,
                json: true,
            })
            .with_filter(filter)
            .boxed(),
        // Colours only on a terminal: escape codes make log files unreadable.
        LogFormat::Human => layer
            .with_ansi(ansi)
            .map_event_format(|human| WithTraceId {
                inner: human,
                json: false,
            })
            .with_filter(filter)
            .boxed(),
    }
}

/// Puts the trace and span ids first on each log line written inside a traced span, so a log
/// line leads to its trace. The OpenTelemetry layer makes an entered span's context current,
/// which is where the ids come from; without trace export there are none and lines are as is.
#[derive(Debug)]
struct WithTraceId<E> {
    inner: E,
    json: bool,
}

impl<S, N, E> FormatEvent<S, N> for WithTraceId<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let ids = span.span_context();
        if !ids.is_valid() {
            return self.inner.format_event(ctx, writer, event);
        }
        if !self.json {
            write!(
                writer,
                "trace_id={} span_id={} ",
                ids.trace_id(),
                ids.span_id()
            )?;
            return self.inner.format_event(ctx, writer, event);
        }
        // The JSON formatter writes one object per line: splice the ids in as its first keys.
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id(),
                ids.span_id()
            ),
            None => writer.write_str(&line),
        }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::*;

    /// Log lines, collected in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Logs `message` inside a traced span, and outside any span, with `format`; returns the
    /// lines and the span's trace id.
    fn log_in_and_out_of_a_span(format: LogFormat) -> (Vec<String>, String) {
        let lines = Lines::default();
        let writer = {
            let lines = lines.clone();
            move || lines.clone()
        };
        // No exporter: the spans only need ids.
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(fmt_layer(format, EnvFilter::new("info"), writer, false))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let trace_id = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", route = "/{code}");
            let trace_id = span.context().span().span_context().trace_id().to_string();
            span.in_scope(|| tracing::info!("inside"));
            tracing::info!("outside");
            trace_id
        });
        let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf-8");
        (text.lines().map(str::to_owned).collect(), trace_id)
    }

    #[test]
    fn json_lines_inside_a_span_start_with_its_trace_id() {
        let (lines, trace_id) = log_in_and_out_of_a_span(LogFormat::Json);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let inside: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
        assert_eq!(inside["trace_id"], trace_id.as_str());
        assert_eq!(inside["fields"]["message"], "inside");
        assert!(lines[0].starts_with("{\"trace_id\":"), "{}", lines[0]);
        let outside: serde_json::Value = serde_json::from_str(&lines[1]).expect("JSON");
        assert!(outside.get("trace_id").is_none(), "{}", lines[1]);
    }

    #[test]
    fn log_lines_carry_no_span_fields_the_trace_has_them() {
        for format in [LogFormat::Json, LogFormat::Human] {
            let (lines, _) = log_in_and_out_of_a_span(format);
            assert!(!lines[0].contains("route"), "{format:?}: {}", lines[0]);
            assert!(!lines[0].contains("request"), "{format:?}: {}", lines[0]);
        }
    }

    #[test]
    fn human_lines_inside_a_span_start_with_its_trace_id() {
        let (lines, trace_id) = log_in_and_out_of_a_span(LogFormat::Human);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with(&format!("trace_id={trace_id} span_id=")),
            "{}",
            lines[0]
        );
        assert!(!lines[1].contains("trace_id="), "{}", lines[1]);
    }
}
