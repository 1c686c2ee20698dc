#![doc = include_str!("../README.md")]
//! # Layout
//! - this file: [`is_bot`] and [`is_bot_header`], the uncached verdicts, and what an empty,
//!   missing or non-UTF-8 User-Agent is.
//! - [`classifier`]: [`Classifier`], the same verdicts cached per User-Agent (bounded).
//! - `patterns`: the vendored isbot list (`patterns/isbot-patterns.json`), compiled once
//!   into one combined regex plus the hand-coded rest.
//! - `javascript`: isbot's JavaScript regex syntax and meaning, rewritten for `regex`.
//! - `hand_coded`: the patterns `regex` cannot run as they are (look-around), in Rust.

pub mod classifier;
mod hand_coded;
mod javascript;
mod patterns;

pub use classifier::{Classifier, MAX_CACHED_LEN};

/// Whether `user_agent` is a bot, a crawler or a link-preview fetcher, by isbot's patterns.
///
/// An empty agent is a bot: every browser sends one, and what does not is a script (isbot
/// itself says "not a bot" there, for want of evidence; Kurz asks "is this a person's
/// browser?", and no agent is answer enough). Uncached: one match, well under a
/// microsecond for a browser's agent (see the README); [`Classifier`] caches the verdicts.
pub fn is_bot(user_agent: &str) -> bool {
    user_agent.is_empty() || patterns::PATTERNS.matches(user_agent)
}

/// [`is_bot`] for a header's raw value, e.g.
/// `request.headers().get(USER_AGENT).map(|value| value.as_bytes())`.
///
/// A missing header is a bot, as an empty one is. So is a value that is not UTF-8: browsers
/// send ASCII agents, so such bytes come from a hand-made client, and no pattern could read
/// them the way isbot would (JavaScript never sees bytes, only what a server decoded them to).
pub fn is_bot_header(user_agent: Option<&[u8]>) -> bool {
    header_text(user_agent).is_none_or(is_bot)
}

/// The agent as text, or `None` where it is missing or not UTF-8 (both bots).
fn header_text(user_agent: Option<&[u8]>) -> Option<&str> {
    user_agent.and_then(|value| std::str::from_utf8(value).ok())
}

#[cfg(test)]
mod tests;
