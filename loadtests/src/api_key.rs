//! `--api-key` and `KURZ_LOAD_API_KEY`: the create API's credential, kept out of every output.
//!
//! The key becomes one `Authorization: Bearer <key>` header value, built once and marked
//! sensitive; each create request gets a clone of it (a reference count, not a copy). Nothing
//! prints it: its `Debug` is `ApiKey(..)`, the report only says whether a key was sent, and a
//! malformed key is refused with a message that does not repeat it. That last point is why the
//! flag has its own clap parser: clap quotes the rejected value in the errors of a plain
//! `fn(&str) -> Result` parser.

use std::ffi::OsStr;
use std::fmt;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use hyper::header::HeaderValue;

/// Read when `--api-key` is absent. The better way to pass a key: a flag's value shows in `ps`
/// and in shell history, an environment variable does not.
pub const API_KEY_ENV: &str = "KURZ_LOAD_API_KEY";

/// Longest key accepted. Kurz's keys are far shorter; this only catches a pasted file.
const MAX_KEY_LEN: usize = 1_024;

/// An API key, ready to send. Cheap to clone.
#[derive(Clone)]
pub struct ApiKey {
    /// `Bearer <key>`, marked sensitive.
    authorization: HeaderValue,
}

impl ApiKey {
    /// Checks `key` (surrounding whitespace removed, as `$(...)` or a file may leave a newline)
    /// and builds its header value. `from` names where the key came from, for the error.
    pub fn new(key: &str, from: &'static str) -> Result<Self, ApiKeyError> {
        let key = key.trim();
        let ok =
            (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
        let header = ok
            .then(|| HeaderValue::try_from(format!("Bearer {key}")).ok())
            .flatten();
        let mut authorization = header.ok_or(ApiKeyError { from })?;
        authorization.set_sensitive(true);
        Ok(Self { authorization })
    }

    /// The value of the `Authorization` header.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// A key that cannot be sent as a header. The message never contains the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{from}: an API key is 1 to 1,024 visible ASCII characters without spaces (the value is not shown)"
)]
pub struct ApiKeyError {
    from: &'static str,
}

/// The key to use: the flag's if given, else the environment's (`env` is the value of
/// [`API_KEY_ENV`], passed in so tests need no process environment). An empty variable counts
/// as unset, as with clap's `env`, which the workspace's clap does not enable.
pub fn resolve(flag: Option<ApiKey>, env: Option<&OsStr>) -> Result<Option<ApiKey>, ApiKeyError> {
    if flag.is_some() {
        return Ok(flag);
    }
    match env.filter(|value| !value.is_empty()) {
        None => Ok(None),
        Some(value) => {
            let text = value.to_str().ok_or(ApiKeyError { from: API_KEY_ENV })?;
            ApiKey::new(text, API_KEY_ENV).map(Some)
        }
    }
}

/// clap's parser of `--api-key`, whose errors leave the value out.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeyParser;

impl TypedValueParser for ApiKeyParser {
    type Value = ApiKey;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<ApiKey, clap::Error> {
        const FLAG: &str = "--api-key";
        let parsed = value
            .to_str()
            .ok_or(ApiKeyError { from: FLAG })
            .and_then(|text| ApiKey::new(text, FLAG));
        parsed
            .map_err(|e| clap::Error::raw(ErrorKind::InvalidValue, format!("{e}\n")).with_cmd(cmd))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    const KEY: &str = "kurz_test_0123456789abcdef";

    #[test]
    fn a_key_becomes_a_sensitive_bearer_header_that_debug_does_not_show() {
        let key = ApiKey::new(&format!(" {KEY}\n"), "test").expect("valid key");
        assert_eq!(key.authorization(), &format!("Bearer {KEY}"));
        assert!(key.authorization().is_sensitive());
        assert_eq!(format!("{key:?}"), "ApiKey(..)");
    }

    #[test]
    fn the_flag_is_parsed_for_runs_and_seeds_and_kept_out_of_debug_output() {
        let cli = Cli::try_parse_from(["kurz-load", "--scenario", "create", "--api-key", KEY])
            .expect("valid flags");
        let key = cli.run.api_key.as_ref().expect("key parsed");
        assert_eq!(key.authorization(), &format!("Bearer {KEY}"));
        assert!(!format!("{cli:?}").contains(KEY));
        let cli = Cli::try_parse_from([
            "kurz-load",
            "seed",
            "--count",
            "1",
            "--out",
            "c",
            "--api-key",
            KEY,
        ])
        .expect("valid flags");
        assert!(matches!(cli.command, Some(Command::Seed(ref s)) if s.api_key.is_some()));
    }

    #[test]
    fn a_malformed_flag_is_refused_without_repeating_it() {
        let secret = "kurz_secret with a space";
        let error = Cli::try_parse_from(["kurz-load", "--api-key", secret]).expect_err("refused");
        let message = error.render().to_string();
        assert!(message.contains("--api-key"), "{message}");
        assert!(!message.contains("kurz_secret"), "{message}");
    }

    #[test]
    fn the_environment_is_read_only_without_the_flag_and_empty_means_unset() {
        let flag = ApiKey::new("from_flag", "test").ok();
        let chosen = resolve(flag, Some(OsStr::new("from_env"))).expect("valid");
        assert_eq!(chosen.expect("a key").authorization(), "Bearer from_flag");
        let chosen = resolve(None, Some(OsStr::new("from_env"))).expect("valid");
        assert_eq!(chosen.expect("a key").authorization(), "Bearer from_env");
        assert!(
            resolve(None, Some(OsStr::new("")))
                .expect("valid")
                .is_none()
        );
        assert!(resolve(None, None).expect("valid").is_none());
    }

    #[test]
    fn a_malformed_environment_value_names_the_variable_and_not_the_value() {
        let error = resolve(None, Some(OsStr::new("kurz_secret\u{7f}"))).expect_err("refused");
        let message = error.to_string();
        assert!(message.starts_with(API_KEY_ENV), "{message}");
        assert!(!message.contains("kurz_secret"), "{message}");
    }
}
