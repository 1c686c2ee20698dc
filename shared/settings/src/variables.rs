//! The names of the `KURZ_*` variables a binary reads, taken from its raw settings structs.
//!
//! Each group of settings is read through one `#[derive(Deserialize)]` struct whose field
//! names are the variables without the prefix (`database_url` is `KURZ_DATABASE_URL`), so the
//! struct itself is the list: serde hands a deserializer the field names of a struct in
//! `deserialize_struct`, and [`names_of`] asks for nothing else. No second list to keep in
//! step: a new field is a new known variable. The names serve two checks: a binary warns at
//! start about `KURZ_*` variables it reads no setting from (a typo otherwise goes unnoticed,
//! see [`crate::Source::unread`]), and a test checks that the Kubernetes manifests set no
//! variable their service ignores.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::source::PREFIX;

/// The variables a raw settings struct reads: `KURZ_` and each serde field name, upper-cased.
///
/// # Panics
/// If `T` is not deserialized as a struct with named fields (a programming error, which any
/// test of a binary's variables finds).
pub fn names_of<'de, T: Deserialize<'de>>() -> BTreeSet<String> {
    let mut capture = FieldNames(None);
    // The capture always answers with an error: it only wants to see the fields.
    let _ = T::deserialize(&mut capture);
    let fields = capture
        .0
        .expect("a raw settings struct is deserialized as a struct with named fields");
    fields
        .iter()
        .map(|field| format!("{PREFIX}{}", field.to_ascii_uppercase()))
        .collect()
}

/// The variables of a binary: its own raw settings struct's, `T`, and those of each shared
/// group it reads (`DatabaseSettings::variables`, ...).
pub fn of_binary<'de, T: Deserialize<'de>>(
    groups: &[fn() -> BTreeSet<String>],
) -> BTreeSet<String> {
    let mut names = names_of::<T>();
    for group in groups {
        names.extend(group());
    }
    names
}

/// The shared groups both HTTP services read: database, Redis, HTTP and telemetry.
pub const HTTP_SERVICE_GROUPS: &[fn() -> BTreeSet<String>] = &[
    crate::DatabaseSettings::variables,
    crate::RedisSettings::variables,
    crate::HttpSettings::variables,
    crate::TelemetrySettings::variables,
];

/// A deserializer that records the field names of the struct asked of it, and stops there.
struct FieldNames(Option<&'static [&'static str]>);

/// The error [`FieldNames`] always answers with.
#[derive(Debug)]
struct Captured;

impl fmt::Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names captured")
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Captured
    }
}

impl<'de> Deserializer<'de> for &mut FieldNames {
    type Error = Captured;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Captured> {
        self.0 = Some(fields);
        Err(Captured)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Captured> {
        Err(Captured)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Source;

    #[derive(Deserialize, Default)]
    #[serde(default)]
    #[allow(dead_code)] // only its shape is read
    struct Raw {
        listen: Option<String>,
        pool_size: Option<u32>,
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_names_are_the_fields_with_the_prefix() {
        assert_eq!(names_of::<Raw>(), names(&["KURZ_LISTEN", "KURZ_POOL_SIZE"]));
    }

    #[test]
    fn unread_variables_are_the_ones_no_field_reads_and_only_kurz_ones() {
        let source = Source::from_vars([
            ("KURZ_LISTEN", "127.0.0.1:0"),
            ("KURZ_POOL_SIZ", "4"),
            ("KURZ_LISTEN_ADDRESS", ""),
            ("PATH", "/usr/bin"),
        ]);
        assert_eq!(
            source.unread(&names_of::<Raw>()),
            vec!["KURZ_LISTEN_ADDRESS", "KURZ_POOL_SIZ"],
            "an empty value is reported too: it is set, and still a typo"
        );
    }
}
