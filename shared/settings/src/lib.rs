#![doc = include_str!("../README.md")]
//! # Layout
//! - [`source`]: where settings come from (`KURZ_*` environment variables, or a map in tests).
//! - [`database`], [`redis`], [`telemetry`], [`http`]: the groups of settings the binaries share.
//! - [`variables`]: the names of the variables a binary reads, from its raw settings structs.
//! - [`SettingsError`]: what stops a binary at start, naming the variable at fault.

pub mod database;
pub mod http;
pub mod redis;
pub mod source;
pub mod telemetry;
pub mod variables;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use figment::value::Value;

pub use database::{BreakerSettings, DatabaseSettings, Pooler};
pub use http::{HttpSettings, TrustedProxies};
pub use redis::{RedisSettings, RedisTarget};
pub use source::Source;
pub use telemetry::{LogFormat, TelemetrySettings};

/// A setting that could not be read or is out of range. The message names the variable, so an
/// operator can fix it without reading code.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A variable has the wrong type or shape (figment names the key).
    #[error("invalid settings: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// A variable parsed but its value is not allowed.
    #[error("invalid value for {variable}: {reason}")]
    Invalid {
        variable: &'static str,
        reason: String,
    },
}

impl SettingsError {
    pub fn invalid(variable: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            variable,
            reason: reason.into(),
        }
    }
}

/// Milliseconds as written in a variable, checked to be positive: a zero timeout would make
/// every call fail, which is never what an operator meant.
pub fn positive_millis(variable: &'static str, millis: u64) -> Result<Duration, SettingsError> {
    if millis == 0 {
        return Err(SettingsError::invalid(variable, "must be greater than 0"));
    }
    Ok(Duration::from_millis(millis))
}

/// A count as written in a variable, checked against what makes sense for it: a value outside
/// stops the binary with the variable's name, never silently bent into range.
pub fn in_range<T>(
    variable: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, SettingsError>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        return Ok(value);
    }
    Err(SettingsError::invalid(
        variable,
        format!("{value} is outside {}..={}", range.start(), range.end()),
    ))
}

/// A switch as written in `variable`: `true` or `false` in any case; unset is false. Nothing
/// else (not `yes`, not `1`): a typo such as `ture` must stop the binary, not quietly leave a
/// check on or off. `raw` is a raw value because the source reads `true` as a boolean and
/// `TRUE` as a string.
pub fn flag(variable: &'static str, raw: Option<Value>) -> Result<bool, SettingsError> {
    match raw {
        None => Ok(false),
        Some(Value::Bool(_, b)) => Ok(b),
        Some(Value::String(_, s)) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(_, s)) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(SettingsError::invalid(
            variable,
            format!("{} is not true or false", other.to_actual()),
        )),
    }
}

/// An `address:port` to bind, as written in `variable`.
pub fn socket_addr(variable: &'static str, raw: &str) -> Result<SocketAddr, SettingsError> {
    raw.parse()
        .map_err(|e| SettingsError::invalid(variable, format!("`{raw}` is not address:port: {e}")))
}

/// An absolute http(s) URL with a host, as written in `variable` (a base URL, a home page).
pub fn http_url(variable: &'static str, raw: &str) -> Result<url::Url, SettingsError> {
    let url = url::Url::parse(raw)
        .map_err(|e| SettingsError::invalid(variable, format!("`{raw}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(SettingsError::invalid(
            variable,
            format!("`{raw}` is not an http(s) URL with a host"),
        ));
    }
    Ok(url)
}

/// Whole seconds as written in a variable, checked to be positive (a zero TTL would disable
/// what it bounds).
pub fn positive_secs(variable: &'static str, secs: u64) -> Result<Duration, SettingsError> {
    if secs == 0 {
        return Err(SettingsError::invalid(variable, "must be at least 1"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &str) -> Result<bool, SettingsError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            switch: Option<Value>,
        }
        let raw: Raw = Source::from_vars([("KURZ_SWITCH", raw)]).extract()?;
        flag("KURZ_SWITCH", raw.switch)
    }

    #[test]
    fn a_flag_is_true_or_false_in_any_case_and_unset_is_false() {
        assert!(read("true").expect("valid"));
        assert!(read("TRUE").expect("valid"));
        assert!(!read("false").expect("valid"));
        assert!(!read("False").expect("valid"));
        assert!(!read("").expect("empty is unset"));
        for wrong in ["yes", "1", "ture"] {
            let err = read(wrong).expect_err("refused");
            assert!(err.to_string().contains("KURZ_SWITCH"), "{err}");
        }
    }
}
