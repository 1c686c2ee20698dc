//! [`Classifier`]: the verdicts of [`crate::is_bot`], cached per User-Agent.

use std::fmt;
use std::sync::LazyLock;

use moka::sync::Cache;

use crate::patterns::PATTERNS;

/// User-Agents longer than this many bytes are classified every time rather than cached, so
/// that a client cannot fill the cache's memory with huge keys. Browsers' agents are 100 to
/// 250 bytes; past 512 are mostly bots that list their whole stack, and each costs one
/// uncached match (linear in its length, as every `regex` search is).
pub const MAX_CACHED_LEN: usize = 512;

/// [`crate::is_bot`] with one verdict cached per User-Agent, in a bounded in-process cache.
///
/// A service sees few distinct agents (browsers' versions, a few hundred fetchers), so a
/// cache of some thousands answers nearly every request without a match. Clones share the
/// cache. At most `capacity` agents are kept (moka evicts the least useful), each at most
/// [`MAX_CACHED_LEN`] bytes, so the keys take at most about `capacity × 512` bytes.
#[derive(Clone)]
pub struct Classifier {
    verdicts: Cache<String, bool>,
}

impl Classifier {
    /// A classifier that keeps at most `capacity` verdicts. Compiles the patterns now if
    /// nothing has yet (some milliseconds), so that no request waits for it.
    pub fn new(capacity: u64) -> Self {
        LazyLock::force(&PATTERNS);
        Self {
            verdicts: Cache::new(capacity),
        }
    }

    /// The verdict of [`crate::is_bot`], from the cache when it has it. An empty agent is a
    /// bot, as there.
    pub fn is_bot(&self, user_agent: &str) -> bool {
        if user_agent.is_empty() || user_agent.len() > MAX_CACHED_LEN {
            return crate::is_bot(user_agent);
        }
        self.verdicts
            .get_with_by_ref(user_agent, || crate::is_bot(user_agent))
    }

    /// The verdict of [`crate::is_bot_header`], from the cache when it has it: a missing,
    /// empty or non-UTF-8 header is a bot.
    pub fn is_bot_header(&self, user_agent: Option<&[u8]>) -> bool {
        crate::header_text(user_agent).is_none_or(|text| self.is_bot(text))
    }
}

/// moka's own `Debug` lists every entry; a log line needs only the size.
impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("capacity", &self.verdicts.policy().max_capacity())
            .field("entries", &self.verdicts.entry_count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const SLACK: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";

    fn cached(classifier: &Classifier) -> u64 {
        classifier.verdicts.run_pending_tasks();
        classifier.verdicts.entry_count()
    }

    #[test]
    fn cached_verdicts_are_the_uncached_ones() {
        let classifier = Classifier::new(100);

        for _ in 0..2 {
            assert!(!classifier.is_bot(CHROME));
            assert!(classifier.is_bot(SLACK));
        }
    }

    #[test]
    fn one_verdict_is_cached_per_user_agent() {
        let classifier = Classifier::new(100);

        classifier.is_bot(CHROME);
        classifier.is_bot(CHROME);
        classifier.clone().is_bot(SLACK);

        assert_eq!(cached(&classifier), 2);
        assert_eq!(classifier.verdicts.get(CHROME), Some(false));
        assert_eq!(classifier.verdicts.get(SLACK), Some(true));
    }

    #[test]
    fn user_agents_longer_than_the_bound_are_classified_but_not_cached() {
        let classifier = Classifier::new(100);
        let at_bound = format!("{CHROME} {}", "x".repeat(MAX_CACHED_LEN - CHROME.len() - 1));
        let over_bound = format!("{at_bound}x");
        let long_bot = format!("{SLACK} {}", "x".repeat(MAX_CACHED_LEN));

        assert!(!classifier.is_bot(&over_bound));
        assert!(classifier.is_bot(&long_bot));
        assert_eq!(cached(&classifier), 0);
        assert!(!classifier.is_bot(&at_bound));
        assert_eq!(cached(&classifier), 1);
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity() {
        let classifier = Classifier::new(10);

        for version in 0..200 {
            classifier.is_bot(&format!("Mozilla/5.0 Firefox/{version}.0"));
        }

        assert!(cached(&classifier) <= 10);
    }

    #[test]
    fn header_verdicts_treat_missing_empty_and_non_utf8_as_bots() {
        let classifier = Classifier::new(100);

        assert!(classifier.is_bot_header(None));
        assert!(classifier.is_bot_header(Some(b"")));
        assert!(classifier.is_bot_header(Some(b"Caf\xe9/1.0 (Windows NT 10.0)")));
        assert!(!classifier.is_bot_header(Some(CHROME.as_bytes())));
        assert_eq!(cached(&classifier), 1);
    }

    #[test]
    fn debug_shows_the_size_and_no_user_agent() {
        let classifier = Classifier::new(100);
        classifier.is_bot(CHROME);
        cached(&classifier);

        let debug = format!("{classifier:?}");

        assert_eq!(debug, "Classifier { capacity: Some(100), entries: 1 }");
    }
}
