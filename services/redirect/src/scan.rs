//! Scan resistance: a client IP that looks up too many codes that do not exist is refused
//! for a while, whatever it asks for.
//!
//! Random probing is how short links get enumerated (a 2016 study found 42% of random
//! bit.ly codes resolved). Each client IP (`kurz_http::client_ip`, an IPv6 client as its
//! /64) may miss `KURZ_SCAN_BUDGET` times per `KURZ_SCAN_WINDOW_SECS`, counted in Redis so
//! every instance shares the budget (`kurz_ratelimit::WindowCounter`). Past it, every code
//! is 429 until its window ends, live ones included, so a throttled scanner learns nothing.
//!
//! What counts: a well-formed code that resolves to no link (unknown or deleted). Paths that
//! can never be a code (`/`, `/favicon.ico`, `/robots.txt`, `/a/b`) do not: probing them
//! finds nothing, and counting them would only spend browsers' and crawlers' budgets and a
//! Redis round trip. Live and expired links never count.
//!
//! What it costs: a request whose client is not known to be blocked pays one atomic load
//! (the counter's block list is empty) and nothing else, so a hit from memory stays free of
//! I/O, allocation and locks. A miss pays one Redis round trip (`record`). An instance
//! learns of a block from its own `record` calls, so a scanner moving to another instance
//! gets at most the answer to its next probe there, which is almost surely a miss and
//! blocks it. Peeking at the block on every local-cache miss would close even that, but
//! would add a Redis command to each of them (90% of requests in `redirect-uniform`); it is
//! not done. With Redis down, each instance counts on its own (the fallback).

use std::time::Duration;

use actix_web::HttpRequest;
use kurz_http::client_ip::request_subject;
use kurz_ratelimit::{Budget, Limit, Store, WindowCounter};
use kurz_repository::codes::is_well_formed;
use kurz_settings::TrustedProxies;

#[derive(Debug)]
pub struct ScanGuard {
    /// `None` when `KURZ_SCAN_BUDGET` is 0 (switched off).
    counter: Option<WindowCounter>,
    budget: Budget,
    trusted: TrustedProxies,
}

impl ScanGuard {
    /// `budget` misses per `window` per client IP; a budget of 0 switches the guard off.
    pub fn new(store: &Store, budget: u32, window: Duration, trusted: TrustedProxies) -> Self {
        Self {
            counter: (budget > 0).then(|| WindowCounter::new(store, Limit::Scan)),
            budget: Budget::new(budget, window),
            trusted,
        }
    }

    /// Checked on every request: how long its client stays blocked, if this instance knows
    /// it is. One atomic load while nobody is blocked.
    pub fn blocked(&self, request: &HttpRequest) -> Option<Duration> {
        let counter = self.counter.as_ref()?;
        if !counter.anyone_blocked_here() {
            return None;
        }
        counter.blocked_here(&self.subject(request))
    }

    /// Counts a lookup of `code` that found no link; the `Retry-After` to answer with when
    /// that took the client past its budget.
    pub async fn missed(&self, request: &HttpRequest, code: &str) -> Option<Duration> {
        let counter = self.counter.as_ref()?;
        if !is_well_formed(code) {
            return None;
        }
        let verdict = counter.record(&self.subject(request), self.budget).await;
        verdict.retry_after
    }

    fn subject(&self, request: &HttpRequest) -> String {
        request_subject(request, &self.trusted)
    }
}
