//! Where settings come from.
//!
//! Production reads the process environment; tests hand in a map. Both go through the same
//! [`figment`] provider, so a test exercises exactly the parsing that production uses, and no
//! test ever has to mutate the process environment.

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;

use crate::SettingsError;

/// Prefix of every Kurz environment variable.
pub const PREFIX: &str = "KURZ_";

/// A set of `KURZ_*` variables. Keys are matched without the prefix and case-insensitively,
/// so `KURZ_DATABASE_URL` fills the field `database_url`.
#[derive(Debug, Clone, Default)]
pub struct Source {
    vars: Vec<(String, String)>,
}

impl Source {
    /// The `KURZ_*` variables of this process.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// Variables from any list of pairs; pairs without the `KURZ_` prefix are ignored.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| k.starts_with(PREFIX))
            .collect();
        Self { vars }
    }

    /// Adds or replaces one variable (`name` with its `KURZ_` prefix).
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_owned(), value.into()));
        self
    }

    /// The variables, as `(name, value)` with the prefix: to hand them to a child process as
    /// its environment.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The names of the variables set here that are not in `known` (a binary's
    /// [`crate::variables`]), sorted: what the binary would silently ignore. `KURZ_TEST_*`
    /// belong to the test kit (`KURZ_TEST_PG_BINDIR`), which the services under test inherit.
    pub fn unread(&self, known: &std::collections::BTreeSet<String>) -> Vec<&str> {
        let mut unread: Vec<&str> = self
            .vars
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !known.contains(*k) && !k.starts_with("KURZ_TEST_"))
            .collect();
        unread.sort_unstable();
        unread.dedup();
        unread
    }

    /// Deserializes the variables into a raw settings struct. Empty values count as unset, so
    /// `KURZ_OTLP_ENDPOINT=` switches an optional feature off instead of failing to parse.
    pub fn extract<T: DeserializeOwned>(&self) -> Result<T, SettingsError> {
        Figment::from(self.clone())
            .extract()
            .map_err(|e| SettingsError::Parse(Box::new(e)))
    }
}

impl Provider for Source {
    fn metadata(&self) -> Metadata {
        Metadata::named("KURZ_* environment variables")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict = self
            .vars
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| {
                let key = k[PREFIX.len()..].to_ascii_lowercase();
                // Quoted or bracketed values keep their structure, like figment's `Env`; a
                // value that is not valid structured data stays a plain string.
                let value: Value = v
                    .parse()
                    .unwrap_or_else(|e: std::convert::Infallible| match e {});
                (key, value)
            })
            .collect();
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Raw {
        listen: Option<String>,
        pool_size: Option<u32>,
    }

    #[test]
    fn map_values_are_parsed_like_environment_variables() {
        let source = Source::from_vars([
            ("KURZ_LISTEN", "127.0.0.1:9000"),
            ("KURZ_POOL_SIZE", "12"),
            ("OTHER", "ignored"),
        ]);
        let raw: Raw = source.extract().expect("valid");
        assert_eq!(raw.listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(raw.pool_size, Some(12));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let raw: Raw = Source::from_vars([("KURZ_POOL_SIZE", "")])
            .extract()
            .expect("valid");
        assert_eq!(raw.pool_size, None);
    }

    #[test]
    fn a_wrongly_typed_value_names_its_key() {
        let err = Source::from_vars([("KURZ_POOL_SIZE", "many")])
            .extract::<Raw>()
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("pool_size"), "{err}");
    }
}
