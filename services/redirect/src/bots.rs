//! A stand-in for `kurz_bots::Classifier` (the `kurz-bots` crate, built on its own branch),
//! with the same API, so that `visits` is written against it and the swap is one line: once
//! `kurz-bots` is in the workspace, this file becomes `pub use kurz_bots::Classifier;`.
//!
//! Until then it knows the link-preview fetchers and crawlers whose visits must not count
//! (shlink #900: a chat app's preview ate a one-visit link's only visit) by a short list of
//! substrings of their User-Agents, and calls an empty agent a bot, as `kurz-bots` does.

/// Whether a User-Agent is a bot, a crawler or a link-preview fetcher.
#[derive(Debug, Clone)]
pub struct Classifier {
    _capacity: u64,
}

/// Lowercase substrings of bots' agents: the generic words, then the preview fetchers that
/// do not use them (WhatsApp's and iMessage's agents say neither "bot" nor "preview").
const MARKERS: &[&str] = &[
    "bot",
    "crawl",
    "spider",
    "preview",
    "slurp",
    "facebookexternalhit",
    "facebookcatalog",
    "whatsapp",
    "linkedin",
    "embedly",
    "skypeuripreview",
    "curl/",
    "wget/",
    "python-requests",
    "go-http-client",
];

impl Classifier {
    /// `capacity`: verdicts cached by the real classifier; unused here.
    pub fn new(capacity: u64) -> Self {
        Self {
            _capacity: capacity,
        }
    }

    pub fn is_bot(&self, user_agent: &str) -> bool {
        let agent = user_agent.to_ascii_lowercase();
        agent.is_empty() || MARKERS.iter().any(|marker| agent.contains(marker))
    }
}
