//! What every answer of [`UrlPolicy::normalize`] satisfies, whatever the input: it does not
//! panic; an accepted URL is `http` or `https`, has a host (not just dots), no credentials, no
//! control, whitespace or invisible characters, fits the length limit, and normalizing it
//! again gives the same string; a refusal carries one of the URL codes.
//!
//! The property tests below and the fuzz target (`services/create/fuzz`, run with
//! `cargo +nightly fuzz run normalize`) both call [`check`] through [`fuzz_one`], so they prove
//! the same thing and the fuzz target's body is compiled and run by every `cargo test`.

use std::sync::LazyLock;

use url::Url;

use super::{UrlPolicy, ValidationError, is_refused_char};

/// The policies every input goes through: the defaults, and one that allows private targets,
/// so IP literals of every range reach the end of the checks (and the idempotence check).
static POLICIES: LazyLock<[UrlPolicy; 2]> = LazyLock::new(|| {
    let base = Url::parse("https://kurz.example/").expect("a valid URL literal");
    let defaults = UrlPolicy::new(2_048, &base);
    let permissive = UrlPolicy {
        allow_private_targets: true,
        ..defaults.clone()
    };
    [defaults, permissive]
});

/// The fuzz target's body: `data`, if UTF-8, through the default policy and one that allows
/// private targets, checking each answer with [`check`].
///
/// # Panics
///
/// When a property fails: that is what the fuzzer looks for.
pub fn fuzz_one(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for policy in POLICIES.iter() {
        if let Err(violation) = check(policy, raw) {
            panic!("{violation}");
        }
    }
}

/// Normalizes `raw` under `policy` and checks the answer; `Err` says which property failed.
pub fn check(policy: &UrlPolicy, raw: &str) -> Result<(), String> {
    match policy.normalize(raw) {
        Ok(normalized) => check_accepted(policy, &normalized),
        Err(e) if is_url_refusal(&e) => Ok(()),
        Err(e) => Err(format!(
            "{raw:?} was refused with the non-URL code {}",
            e.code()
        )),
    }
}

fn check_accepted(policy: &UrlPolicy, normalized: &str) -> Result<(), String> {
    let fail = |what: &str| Err(format!("accepted {normalized:?}, which {what}"));
    let Ok(url) = Url::parse(normalized) else {
        return fail("does not parse again");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return fail("is not http or https");
    }
    if url
        .host_str()
        .is_none_or(|h| h.trim_end_matches('.').is_empty())
    {
        return fail("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return fail("has credentials");
    }
    if normalized
        .chars()
        .any(|c| c.is_whitespace() || is_refused_char(c))
    {
        return fail("has control, whitespace or invisible characters");
    }
    if normalized.len() > policy.max_length {
        return fail("is longer than the limit");
    }
    match policy.normalize(normalized) {
        Ok(again) if again == normalized => Ok(()),
        other => fail(&format!("normalizes again to {other:?}")),
    }
}

fn is_url_refusal(e: &ValidationError) -> bool {
    use ValidationError::*;
    matches!(
        e,
        InvalidUrl(_)
            | UrlTooLong(_)
            | UnsupportedScheme(_)
            | UrlInvalidCharacters
            | UrlHasCredentials
            | UrlMissingHost
            | UrlSelfReference(_)
            | UrlPrivateTarget(_)
            | UrlBlocked(_)
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Pieces chosen so that generated strings reach the parser's interesting paths: numeric
    /// and IPv6 hosts, IDN, percent-encoding, dot segments, default ports, credentials, and
    /// the characters the validator trims, encodes or refuses.
    fn scheme() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "http://",
            "https://",
            "HTTP://",
            "hTTps://",
            "http:",
            "https:/",
            "http:\\\\",
            "ftp://",
            "javascript:",
            "data:",
            "",
            "//",
            "http:///",
            " https://",
        ])
    }

    fn host() -> impl Strategy<Value = String> {
        let named = prop::sample::select(vec![
            "example.com",
            "EXAMPLE.com.",
            "kurz.example",
            "bücher.example",
            "xn--bcher-kva.example",
            "localhost",
            "foo.localhost",
            "bit.ly",
            "www.bit.ly",
            "notbit.ly",
            "127.0.0.1",
            "2130706433",
            "127.1",
            "0x7f.1",
            "0177.0.0.1",
            "0",
            "10.0.0.1",
            "93.184.216.34",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[fe80::1]",
            "[fd00::1]",
            "[2606:2800:220:1::]",
            "[64:ff9b::808:808]",
            "1.2.3.4.5",
            "256.0.0.1",
            "ex%61mple.com",
            "exa mple.com",
            "a..b",
            "%2e",
            "Ⅻ.example",
            "example。com",
            "",
        ]);
        prop_oneof![
            4 => named.prop_map(str::to_owned),
            1 => "[a-zA-Z0-9.%-]{0,12}",
            1 => any::<u32>().prop_map(|n| n.to_string()),
            1 => "[0-9a-fA-F:.]{0,20}".prop_map(|s| format!("[{s}]")),
        ]
    }

    fn tail() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "/", "a", "/./", "/../", "%2e%2E", "%", "%zz", "%20", " ", "?", "#", "&", "=", "é",
            "\\", "@", ":", ":80", ":443", ":99999", "user:pw@", "[", "]", "^", "|", "`", "{", "}",
            "'", "\"", "<", ">", "..", "Ⅻ", "ß",
        ]);
        // Rare, so that most strings get past the character check to the parser.
        let refused =
            prop::sample::select(vec!["\u{A0}", "\t", "\n", "\u{200B}", "\u{0}", "\u{7F}"]);
        let piece = prop_oneof![30 => piece, 1 => refused];
        prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    fn urlish() -> impl Strategy<Value = String> {
        // Mostly a clean end of the host, so the rest lands in the path, query or fragment.
        let after_host = prop::sample::select(vec!["/", "/", "/", "/", "", "?", "#", ":8080/"]);
        let trailer = prop::sample::select(vec!["", "", "", " ", "  ", "\t"]);
        (scheme(), host(), after_host, tail(), trailer).prop_map(
            |(scheme, host, after, tail, end)| format!("{scheme}{host}{after}{tail}{end}"),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn url_ish_strings_satisfy_every_property(raw in urlish()) {
            for policy in POLICIES.iter() {
                prop_assert_eq!(check(policy, &raw), Ok(()));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        #[test]
        fn arbitrary_strings_satisfy_every_property(raw in any::<String>()) {
            fuzz_one(raw.as_bytes());
        }

        #[test]
        fn an_http_prefix_does_not_change_that(tail in any::<String>()) {
            fuzz_one(format!("https://{tail}").as_bytes());
        }
    }

    #[test]
    fn the_fuzz_target_ignores_invalid_utf8_and_checks_the_rest() {
        fuzz_one(&[0xff, 0xfe]);
        fuzz_one(b"https://example.com/a b");
        fuzz_one(b"http://2130706433/");
    }

    #[test]
    fn a_broken_property_is_reported() {
        // `normalize` never produces these, so the checks are shown to bite by hand.
        let p = &POLICIES[0];
        assert_eq!(check(p, "https://example.com/"), Ok(()));
        assert!(check_accepted(p, "https://user@example.com/").is_err());
        assert!(check_accepted(p, "ftp://example.com/").is_err());
        assert!(check_accepted(p, "https://example.com/a b").is_err());
        assert!(check_accepted(p, "https://./").is_err());
    }
}
