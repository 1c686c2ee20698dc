//! The vendored isbot list, compiled once: one combined regex for every pattern `regex` can
//! run, and the hand-coded rest.

use std::sync::LazyLock;

use regex::bytes::{Regex, RegexBuilder};

use crate::hand_coded::{self, LOOK_AROUNDS, LookAround};
use crate::javascript;

/// isbot's list as the npm package ships it (see `patterns/NOTICE` and `patterns/update.sh`).
const VENDORED: &str = include_str!("../patterns/isbot-patterns.json");

/// Compiled on first use; [`crate::Classifier::new`] forces it, so a service pays for it at
/// start rather than on its first request.
pub(crate) static PATTERNS: LazyLock<Patterns> = LazyLock::new(Patterns::compile);

/// isbot's patterns, each a JavaScript regular expression source.
pub(crate) fn vendored() -> Vec<String> {
    serde_json::from_str(VENDORED).expect("patterns/isbot-patterns.json is a JSON array of strings")
}

/// One pattern the way isbot applies it: case-insensitively, with ASCII `\w`, `\d` and `\b`.
/// Searched on bytes, because ASCII mode lets a class such as `[^g]` match any byte, which
/// `regex`'s `&str` API refuses.
pub(crate) fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .case_insensitive(true)
        .build()
}

#[derive(Debug)]
pub(crate) struct Patterns {
    /// Every vendored pattern but the hand-coded ones, as one alternation.
    combined: Regex,
    /// `combined` and the cores of the look-around patterns, as one alternation: when it
    /// does not match, which is the case for most browsers' agents, nothing can, and one
    /// search has said so. (Measured: about 100 ns less per browser than `combined` and a
    /// separate search for the cores; a `RegexSet` was no faster than one alternation.)
    screen: Regex,
    /// Each look-around pattern with its compiled core.
    look_arounds: Vec<(&'static LookAround, Regex)>,
}

impl Patterns {
    /// Panics if a vendored pattern does not compile: the unit tests name it first.
    fn compile() -> Self {
        let list = vendored();
        let translated: Vec<String> = list
            .iter()
            .filter(|pattern| !hand_coded::sources().any(|source| source == pattern.as_str()))
            .map(|pattern| {
                let rust = javascript::translate(pattern)
                    .unwrap_or_else(|why| panic!("isbot pattern {pattern:?} has {why}"));
                format!("(?:{rust})")
            })
            .collect();
        let cores = LOOK_AROUNDS.iter().map(|rule| format!("(?:{})", rule.core));
        let screen: Vec<String> = translated.iter().cloned().chain(cores).collect();
        Self {
            combined: compile(&translated.join("|")).expect("the vendored patterns compile"),
            screen: compile(&screen.join("|")).expect("the look-around cores compile"),
            look_arounds: LOOK_AROUNDS
                .iter()
                .map(|rule| {
                    (
                        rule,
                        compile(rule.core).expect("a look-around core compiles"),
                    )
                })
                .collect(),
        }
    }

    /// Whether any of isbot's patterns matches: its `isbot(user_agent)` for a non-empty one.
    pub(crate) fn matches(&self, user_agent: &str) -> bool {
        let text = user_agent.as_bytes();
        hand_coded::is_long_word(user_agent)
            || (self.screen.is_match(text)
                && (self.combined.is_match(text)
                    || self
                        .look_arounds
                        .iter()
                        .any(|(rule, core)| look_around_matches(rule, core, text))))
    }
}

/// Tries every place the core matches, until one stands clear of the exclusions: the first
/// can be excluded and a later one not, as in "CUBOT … Twitterbot".
fn look_around_matches(rule: &LookAround, core: &Regex, text: &[u8]) -> bool {
    let mut from = 0;
    while let Some(found) = core.find_at(text, from) {
        if rule.allows(text, found.start(), found.end()) {
            return true;
        }
        // Cores are never empty, so this moves on and stays within the text.
        from = found.start() + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vendored_pattern_is_compiled_or_hand_coded() {
        let failures: Vec<String> = vendored()
            .iter()
            .filter(|pattern| !hand_coded::sources().any(|source| source == pattern.as_str()))
            .filter_map(|pattern| {
                let outcome = javascript::translate(pattern)
                    .map_err(|why| why.to_string())
                    .and_then(|rust| compile(&rust).map_err(|error| error.to_string()));
                outcome.err().map(|why| format!("{pattern:?}: {why}"))
            })
            .collect();

        assert!(
            failures.is_empty(),
            "hand-code these in hand_coded.rs: {failures:#?}"
        );
    }

    #[test]
    fn every_hand_coded_pattern_is_still_in_the_vendored_list() {
        let list = vendored();

        let stale: Vec<&str> = hand_coded::sources()
            .filter(|source| !list.iter().any(|pattern| pattern == source))
            .collect();

        assert!(stale.is_empty(), "no longer in isbot's list: {stale:?}");
    }

    #[test]
    fn look_around_patterns_are_refused_by_regex_and_their_cores_are_not() {
        for rule in &LOOK_AROUNDS {
            assert!(compile(rule.source).is_err(), "{:?} compiles", rule.source);
            assert!(compile(rule.core).is_ok(), "{:?} does not", rule.core);
        }
    }

    #[test]
    fn the_vendored_list_compiles_into_one_regex() {
        let patterns = Patterns::compile();

        assert!(patterns.matches("Twitterbot/1.0"));
    }
}
