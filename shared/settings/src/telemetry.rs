//! Logging and tracing settings.

use serde::Deserialize;
use url::Url;

use crate::{SettingsError, Source, in_range};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, for log shippers.
    Json,
    /// Coloured, aligned text for people.
    Human,
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `KURZ_LOG_FORMAT`: `human` (default) or `json`.
    pub log_format: LogFormat,
    /// `KURZ_LOG`: a `tracing` filter such as `info` or `kurz_redirect=debug,info`
    /// (default `info`).
    pub log_filter: String,
    /// `KURZ_OTLP_ENDPOINT`: an OTLP/gRPC collector such as `http://127.0.0.1:4317`. Unset
    /// (the default) switches trace export off.
    pub otlp_endpoint: Option<Url>,
    /// `KURZ_TRACE_SAMPLE_RATIO`: the share of new traces recorded, 0 to 1 (default 1). A
    /// request that arrives with a trace context follows its caller's decision instead
    /// (parent-based sampling), so a trace is never recorded in one service and not the next.
    pub trace_sample_ratio: f64,
    /// `KURZ_TRACE_FILTER`: which spans are exported, a `tracing` filter like `KURZ_LOG`
    /// (default `info`). Separate from the log filter, so quiet logs (`KURZ_LOG=warn`) still
    /// leave full traces.
    pub trace_filter: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    log_format: Option<String>,
    log: Option<String>,
    otlp_endpoint: Option<String>,
    trace_sample_ratio: Option<f64>,
    trace_filter: Option<String>,
}

impl TelemetrySettings {
    /// The variables [`Self::from_source`] reads (`KURZ_LOG*`, `KURZ_OTLP_ENDPOINT`, `KURZ_TRACE_*`).
    pub fn variables() -> std::collections::BTreeSet<String> {
        crate::variables::names_of::<Vars>()
    }

    pub fn from_source(source: &Source) -> Result<Self, SettingsError> {
        let vars: Vars = source.extract()?;
        let log_format = match vars.log_format.as_deref().map(str::to_ascii_lowercase) {
            None => LogFormat::Human,
            Some(f) if f == "human" => LogFormat::Human,
            Some(f) if f == "json" => LogFormat::Json,
            Some(other) => {
                return Err(SettingsError::invalid(
                    "KURZ_LOG_FORMAT",
                    format!("`{other}` is neither `human` nor `json`"),
                ));
            }
        };
        let otlp_endpoint = vars
            .otlp_endpoint
            .map(|raw| {
                let url = Url::parse(&raw).map_err(|e| {
                    SettingsError::invalid("KURZ_OTLP_ENDPOINT", format!("`{raw}`: {e}"))
                })?;
                // An endpoint without a scheme would silently mean https; insist on one.
                match url.scheme() {
                    "http" | "https" => Ok(url),
                    s => Err(SettingsError::invalid(
                        "KURZ_OTLP_ENDPOINT",
                        format!("scheme `{s}` is not http or https"),
                    )),
                }
            })
            .transpose()?;
        let trace_sample_ratio = in_range(
            "KURZ_TRACE_SAMPLE_RATIO",
            vars.trace_sample_ratio.unwrap_or(1.0),
            0.0..=1.0,
        )?;
        Ok(Self {
            log_format,
            log_filter: vars.log.unwrap_or_else(|| "info".to_owned()),
            otlp_endpoint,
            trace_sample_ratio,
            trace_filter: vars.trace_filter.unwrap_or_else(|| "info".to_owned()),
        })
    }
}
