//! Logging and tracing settings.

use serde::Deserialize;
use url::Url;

use crate::{SettingsError, Source};

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
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Vars {
    log_format: Option<String>,
    log: Option<String>,
    otlp_endpoint: Option<String>,
}

impl TelemetrySettings {
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
        Ok(Self {
            log_format,
            log_filter: vars.log.unwrap_or_else(|| "info".to_owned()),
            otlp_endpoint,
        })
    }
}
