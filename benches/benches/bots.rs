//! Criterion benchmarks of the bot classifier, which every redirect runs (see the crate
//! README). Its own bench target, so that it runs in seconds without the hot paths' setup.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kurz_bots::{Classifier, is_bot};

/// Chrome on Windows: no pattern matches, so every one is tried (the slow case).
const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
/// Safari on iPhone: longer, and no pattern matches either.
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
/// Slack's link preview: matched by a hand-coded look-around pattern ("bot").
const BOT: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";

fn bots(c: &mut Criterion) {
    let mut group = c.benchmark_group("bots");
    for (name, agent) in [("browser", BROWSER), ("iphone", IPHONE), ("bot", BOT)] {
        group.bench_function(format!("is_bot/{name}"), |b| {
            b.iter(|| is_bot(black_box(agent)))
        });
    }
    let classifier = Classifier::new(10_000);
    for (name, agent) in [("browser", BROWSER), ("iphone", IPHONE), ("bot", BOT)] {
        // The first call fills the cache; every measured one is a hit.
        assert_eq!(classifier.is_bot(agent), is_bot(agent));
        group.bench_function(format!("classifier_hit/{name}"), |b| {
            b.iter(|| classifier.is_bot(black_box(agent)))
        });
    }
    group.finish();
}

criterion_group!(benches, bots);
criterion_main!(benches);
