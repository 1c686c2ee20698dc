//! The isbot patterns that `regex` cannot run as they are, in Rust, with the same verdicts.
//!
//! Six use negative look-around, which `regex` does not have (it guarantees linear time; a
//! look-around engine such as fancy-regex cost 45 to 930 µs per User-Agent here). Each is
//! the same pattern without its look-around (its "core", compiled like the others), and
//! what must not stand right before or right after a match of the core. The text is
//! compared byte by byte, ASCII case-insensitively, as JavaScript's `i` does without `u`: the
//! exclusions are ASCII, so a byte of a multi-byte character never equals one of theirs.
//!
//! One more, `^[^ ]{50,}$`, compiles, but in ASCII mode `regex` would count bytes where
//! JavaScript counts UTF-16 code units: [`is_long_word`] counts the way JavaScript does.

/// A pattern `core(?!before)` with a negative look-behind `(?<!after)` in front of it.
#[derive(Debug)]
pub(crate) struct LookAround {
    /// The pattern as isbot writes it, which is how it is found in the vendored list.
    pub(crate) source: &'static str,
    /// The pattern without its look-around: what must match.
    pub(crate) core: &'static str,
    /// A match of the core does not count right after one of these (the look-behind).
    not_after: &'static [&'static str],
    /// Nor right before one of these (the look-ahead).
    not_before: &'static [&'static str],
}

/// The six, with the User-Agents each exclusion is there for. Every core but `bots?` has a
/// fixed length, so its look-ahead is checked at the one place a match can end.
pub(crate) const LOOK_AROUNDS: [LookAround; 6] = [
    // "news", but not the news reader apps GNews and BingNews (`[^g]` before it), nor the
    // NewsSapphire app. `(?:^|[^g])` is a look-behind in all but name: "news" at the very
    // start, or after anything but a g.
    LookAround {
        source: "(?:^|[^g])news(?!sapphire)",
        core: "news",
        not_after: &["g"],
        not_before: &["sapphire"],
    },
    // Google's fetchers ("Googlebot", "Google-InspectionTool", "Google (+https://…)"), but not
    // where isbot found people: the Android Google app ("GoogleApp/"), "Google Pixel" phones,
    // and "googlewv", "Google/Google" or "channel/google" in apps' agents.
    LookAround {
        source: "(?<! channel/|google/)google(?!(?:wv|app|/google| pixel))",
        core: "google",
        not_after: &[" channel/", "google/"],
        not_before: &["wv", "app", "/google", " pixel"],
    },
    // "bot" or "bots" ending a word (or before `_`), but not in Cubot phones' " CUBOT".
    LookAround {
        source: r"(?<! cu)bots?(?:\b|_)",
        core: r"bots?(?:\b|_)",
        not_after: &[" cu"],
        not_before: &[],
    },
    // Scanners, but not the CamScanner app.
    LookAround {
        source: "(?<!cam)scan",
        core: "scan",
        not_after: &["cam"],
        not_before: &[],
    },
    // An HTTP library ("Go-http-client", "http.rb") or a URL in the agent, but not "libhttp".
    LookAround {
        source: "(?<!lib)http",
        core: "http",
        not_after: &["lib"],
        not_before: &[],
    },
    // Java's HTTP client ("Java/1.8.0_151"), but not "Java;", a part of some people's agents.
    LookAround {
        source: "java(?!;)",
        core: "java",
        not_after: &[],
        not_before: &[";"],
    },
];

impl LookAround {
    /// Whether the match of the core that spans `start..end` in `text` stands clear of
    /// every exclusion.
    pub(crate) fn allows(&self, text: &[u8], start: usize, end: usize) -> bool {
        let (before, after) = (&text[..start], &text[end..]);
        !self
            .not_after
            .iter()
            .any(|word| ends_with_ignoring_case(before, word.as_bytes()))
            && !self
                .not_before
                .iter()
                .any(|word| starts_with_ignoring_case(after, word.as_bytes()))
    }
}

fn ends_with_ignoring_case(text: &[u8], suffix: &[u8]) -> bool {
    text.len() >= suffix.len() && text[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

fn starts_with_ignoring_case(text: &[u8], prefix: &[u8]) -> bool {
    text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The source of [`is_long_word`] in the vendored list.
pub(crate) const LONG_WORD: &str = "^[^ ]{50,}$";

/// `^[^ ]{50,}$`: fifty UTF-16 code units or more, none of them a space (tokens, hashes and
/// other machine-made agents). A UTF-8 string has at least as many bytes as UTF-16 units, so
/// the byte length rules most agents out before anything is counted.
pub(crate) fn is_long_word(user_agent: &str) -> bool {
    user_agent.len() >= 50
        && !user_agent.contains(' ')
        && user_agent.encode_utf16().nth(49).is_some()
}

/// Every vendored pattern this module stands in for.
pub(crate) fn sources() -> impl Iterator<Item = &'static str> {
    LOOK_AROUNDS
        .iter()
        .map(|rule| rule.source)
        .chain([LONG_WORD])
}
