//! The domain blocklist: a target on a listed domain, or on any name under it, is refused with
//! `url_blocked`.
//!
//! A [`Blocklist`] is a set of domains in the form the URL parser gives hosts (lower case,
//! punycode, no trailing dot), so checking a host costs one hash lookup per label:
//! `a.b.bit.ly` looks up `a.b.bit.ly`, `b.bit.ly`, `bit.ly` and `ly`. A [`SharedBlocklist`]
//! holds the current list behind an [`ArcSwap`]: a create reads it without taking a lock, and
//! a reload swaps in a whole new list, so no request ever sees half of one.
//!
//! [`BlocklistWatcher`] re-reads `KURZ_BLOCKLIST_FILE` when its modification time or length
//! changes ([`POLL_INTERVAL`]). Polling one `stat` a second is cheaper to reason about than
//! inotify (no extra dependency, and it works on any file system and through symlinks swapped
//! by a deploy); a change is seen within about a second, which is soon enough for a list an
//! operator edits by hand.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use url::Host;

/// The default list, used when `KURZ_BLOCKLIST_FILE` is unset: general-purpose link
/// shorteners, because a short link to a short link hides where it goes.
pub const SHORTENERS: &str = include_str!("../blocklist/shorteners.txt");

/// How often the watcher looks at the file's modification time and length.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Parsed once per process; [`Blocklist::shorteners`] hands out the same list each time.
static DEFAULT_LIST: LazyLock<Arc<Blocklist>> = LazyLock::new(|| {
    // The text is compiled in, and `the_default_list_parses` proves it parses: this cannot
    // fail at run time. `Application::build` touches it, so it would fail at start anyway.
    Arc::new(Blocklist::parse(SHORTENERS).expect("the built-in blocklist is valid"))
});

/// Why a list could not be loaded. The watcher keeps the last good list on either.
#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    #[error("cannot read the file: {0}")]
    Read(#[from] std::io::Error),
    #[error(
        "line {line}: `{entry}` is not a domain ({reason}); write one domain a line, such as bit.ly"
    )]
    Entry {
        line: usize,
        entry: String,
        reason: String,
    },
}

/// A set of blocked domains; each also blocks every name under it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocklist {
    domains: HashSet<Box<str>>,
}

impl Blocklist {
    /// The built-in list of link shorteners ([`SHORTENERS`]).
    pub fn shorteners() -> Arc<Self> {
        Arc::clone(&DEFAULT_LIST)
    }

    /// Parses one domain a line. Blank lines and everything after a `#` are ignored; an entry
    /// is lower-cased, loses a trailing dot and is converted to punycode, exactly as the URL
    /// parser treats a host. Any other line (a URL, an IP address, a wildcard) fails the whole
    /// list: a typo should be seen, not silently block nothing.
    pub fn parse(text: &str) -> Result<Self, BlocklistError> {
        let mut domains = HashSet::new();
        for (index, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            let domain = parse_entry(entry).map_err(|reason| BlocklistError::Entry {
                line: index + 1,
                entry: entry.to_owned(),
                reason,
            })?;
            domains.insert(domain);
        }
        Ok(Self { domains })
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<Self, BlocklistError> {
        Self::parse(&std::fs::read_to_string(path)?)
    }

    /// The entry that blocks `host` (lower case, no trailing dot, as [`url::Url`] gives it),
    /// if any: `host` itself or the part after any of its dots.
    pub fn find(&self, host: &str) -> Option<&str> {
        let mut suffix = host;
        loop {
            if let Some(entry) = self.domains.get(suffix) {
                return Some(entry);
            }
            suffix = suffix.split_once('.')?.1;
        }
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

/// One entry in canonical form, or why it is not a domain.
fn parse_entry(entry: &str) -> Result<Box<str>, String> {
    // The URL parser's own host rules (UTS 46 mapping, punycode, lower case), so an entry and
    // a target's host always compare in the same form.
    let domain = match Host::parse(entry) {
        Ok(Host::Domain(domain)) => domain,
        Ok(Host::Ipv4(_) | Host::Ipv6(_)) => {
            return Err("an IP address; the blocklist applies to domains only".into());
        }
        Err(e) => return Err(e.to_string()),
    };
    let domain = domain.strip_suffix('.').unwrap_or(&domain);
    let well_formed = domain.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !well_formed {
        return Err("only letters, digits, `-` and `_` between dots".into());
    }
    Ok(domain.into())
}

/// The list every create checks, replaced whole on reload.
#[derive(Debug, Clone)]
pub struct SharedBlocklist(Arc<ArcSwap<Blocklist>>);

impl SharedBlocklist {
    pub fn new(list: Arc<Blocklist>) -> Self {
        Self(Arc::new(ArcSwap::new(list)))
    }

    /// The entry that blocks `host`, if any (see [`Blocklist::find`]). Allocates only on a
    /// match, which refuses the request.
    pub fn find(&self, host: &str) -> Option<String> {
        self.0.load().find(host).map(str::to_owned)
    }

    /// The list in force now.
    pub fn current(&self) -> Arc<Blocklist> {
        self.0.load_full()
    }

    /// Puts `list` in force for every request that starts from now on.
    pub fn replace(&self, list: Blocklist) {
        self.0.store(Arc::new(list));
    }
}

impl Default for SharedBlocklist {
    /// The built-in list of link shorteners.
    fn default() -> Self {
        Self::new(Blocklist::shorteners())
    }
}

/// What one look at the file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Same modification time and length as last time: not read.
    Unchanged,
    /// Read, parsed and put in force.
    Reloaded { domains: usize },
    /// Not readable or not valid: the last good list stays in force.
    Failed(String),
    /// Nobody uses the list any more (the application stopped): the watcher ends.
    Stopped,
}

/// What the watcher compares between looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        Ok(Self {
            modified: metadata.modified().ok(),
            len: metadata.len(),
        })
    }
}

/// Re-reads a blocklist file when it changes; see the module docs.
#[derive(Debug)]
pub struct BlocklistWatcher {
    path: PathBuf,
    /// Weak, so the watcher ends when the application that checks the list is gone.
    list: Weak<ArcSwap<Blocklist>>,
    /// The file as last read successfully; `None` after a failure, so the next look reads it
    /// again even if only its permissions changed.
    seen: Option<Stamp>,
    /// The last failure logged, so a file that stays broken is warned about once, not every
    /// second.
    last_error: Option<String>,
}

impl BlocklistWatcher {
    /// Reads the file once. An error here is meant to stop the binary: at start there is no
    /// last good list to fall back on.
    pub fn start(path: &Path) -> Result<(SharedBlocklist, Self), BlocklistError> {
        // The stamp is taken before the read: a write landing in between is then seen as a
        // change at the next look and read again, never missed.
        let seen = Stamp::of(path)?;
        let shared = SharedBlocklist::new(Arc::new(Blocklist::read(path)?));
        let watcher = Self {
            path: path.to_owned(),
            list: Arc::downgrade(&shared.0),
            seen: Some(seen),
            last_error: None,
        };
        Ok((shared, watcher))
    }

    /// One look at the file: reload it if its modification time or length changed.
    pub fn check_once(&mut self) -> Reload {
        let Some(list) = self.list.upgrade() else {
            return Reload::Stopped;
        };
        let stamp = match Stamp::of(&self.path) {
            Ok(stamp) => stamp,
            Err(e) => return self.failed(&BlocklistError::Read(e)),
        };
        if self.seen == Some(stamp) {
            return Reload::Unchanged;
        }
        match Blocklist::read(&self.path) {
            Ok(new) => {
                let domains = new.len();
                list.store(Arc::new(new));
                self.seen = Some(stamp);
                self.last_error = None;
                tracing::info!(path = %self.path.display(), domains, "blocklist reloaded");
                Reload::Reloaded { domains }
            }
            Err(e) => self.failed(&e),
        }
    }

    fn failed(&mut self, error: &BlocklistError) -> Reload {
        let message = error.to_string();
        if self.last_error.as_deref() != Some(&message) {
            tracing::warn!(
                path = %self.path.display(),
                error = %message,
                "KURZ_BLOCKLIST_FILE could not be reloaded; the last good list stays in force"
            );
        }
        self.seen = None;
        self.last_error = Some(message.clone());
        Reload::Failed(message)
    }

    /// Looks at the file every [`POLL_INTERVAL`] until the application is gone.
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(POLL_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                // Plain blocking file calls on the runtime: a `stat` a second, and a read of a
                // small file when it changed, take microseconds; `spawn_blocking` would cost
                // more than it saves.
                if self.check_once() == Reload::Stopped {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Blocklist {
        Blocklist::parse(text).expect("valid list")
    }

    #[test]
    fn the_default_list_parses_and_holds_the_well_known_shorteners() {
        let list = Blocklist::parse(SHORTENERS).expect("the built-in list is valid");
        let entries = SHORTENERS
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
        assert_eq!(list.len(), entries.count(), "no entry is listed twice");
        assert!((30..=80).contains(&list.len()), "{}", list.len());
        for domain in ["bit.ly", "tinyurl.com", "t.co", "goo.gl", "is.gd", "rb.gy"] {
            assert_eq!(list.find(domain), Some(domain));
        }
        assert_eq!(*Blocklist::shorteners(), list);
    }

    #[test]
    fn an_entry_blocks_its_domain_and_subdomains_at_label_boundaries() {
        let list = list("bit.ly\n");
        assert_eq!(list.find("bit.ly"), Some("bit.ly"));
        assert_eq!(list.find("www.bit.ly"), Some("bit.ly"));
        assert_eq!(list.find("a.b.bit.ly"), Some("bit.ly"));
        assert_eq!(list.find("notbit.ly"), None);
        assert_eq!(list.find("bit.ly.example"), None);
        assert_eq!(list.find("ly"), None);
        assert_eq!(Blocklist::default().find("bit.ly"), None);
    }

    #[test]
    fn comments_blank_lines_case_trailing_dots_and_unicode_are_normalized() {
        let list = list("# shorteners\n\n  Bit.LY.  \ntinyurl.com # TinyURL\r\nbücher.example\n");
        assert_eq!(list.len(), 3);
        assert_eq!(list.find("bit.ly"), Some("bit.ly"));
        assert_eq!(list.find("tinyurl.com"), Some("tinyurl.com"));
        assert_eq!(
            list.find("shop.xn--bcher-kva.example"),
            Some("xn--bcher-kva.example")
        );
    }

    #[test]
    fn a_line_that_is_not_a_domain_fails_the_whole_list_naming_its_line() {
        for (text, line) in [
            ("bit.ly\nhttps://tinyurl.com/\n", 2),
            ("127.0.0.1\n", 1),
            ("[::1]\n", 1),
            ("ok.example\n\n*.bit.ly\n", 3),
            ("bit..ly\n", 1),
            (".bit.ly\n", 1),
        ] {
            match Blocklist::parse(text) {
                Err(BlocklistError::Entry { line: at, .. }) => assert_eq!(at, line, "{text:?}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_shared_list_is_replaced_whole() {
        let shared = SharedBlocklist::new(Arc::new(list("a.example\n")));
        assert_eq!(shared.find("www.a.example").as_deref(), Some("a.example"));

        shared.replace(list("b.example\n"));

        assert_eq!(shared.find("www.a.example"), None);
        assert_eq!(shared.find("b.example").as_deref(), Some("b.example"));
        assert_eq!(
            SharedBlocklist::default().find("bit.ly").as_deref(),
            Some("bit.ly")
        );
    }

    /// Writes `text` to the watched file. Each write in these tests has a new length, so the
    /// change is seen whatever the file system's timestamp resolution.
    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write the list");
    }

    #[test]
    fn the_watcher_reloads_a_changed_file_and_keeps_the_last_good_list_on_failure() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("blocklist.txt");
        write(&path, "one.example\n");
        let (shared, mut watcher) = BlocklistWatcher::start(&path).expect("loads");
        assert_eq!(watcher.check_once(), Reload::Unchanged);

        write(&path, "two.example\nthree.example\n");
        assert_eq!(watcher.check_once(), Reload::Reloaded { domains: 2 });
        assert_eq!(watcher.check_once(), Reload::Unchanged);
        assert!(shared.find("two.example").is_some());

        write(&path, "two.example\nnot a domain\n");
        assert!(matches!(watcher.check_once(), Reload::Failed(e) if e.contains("line 2")));
        assert!(
            shared.find("three.example").is_some(),
            "last good list kept"
        );

        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(watcher.check_once(), Reload::Failed(_)));
        assert!(
            shared.find("three.example").is_some(),
            "last good list kept"
        );

        write(&path, "four.example\n");
        assert_eq!(watcher.check_once(), Reload::Reloaded { domains: 1 });
        assert_eq!(shared.find("three.example"), None);
    }

    #[test]
    fn the_watcher_stops_when_the_list_is_dropped() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let (shared, mut watcher) = BlocklistWatcher::start(file.path()).expect("loads");
        drop(shared);
        assert_eq!(watcher.check_once(), Reload::Stopped);
    }

    #[test]
    fn a_missing_file_at_start_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = BlocklistWatcher::start(&dir.path().join("missing.txt")).expect_err("fails");
        assert!(matches!(err, BlocklistError::Read(_)), "{err}");
    }
}
