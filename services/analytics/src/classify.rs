//! What a click says about its visitor: bot or human, browser and OS family, device class,
//! referring host and country. Values are what the stats API shows, so they are short,
//! stable names (`Chrome`, `macOS`, `mobile`, `news.example`, `DE`), and a value that cannot
//! be known is `(unknown)` (or `(direct)` for a missing referrer), never an empty string.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use kurz_repository::analytics::MAX_VALUE_BYTES;
use kurz_repository::clicks::{ClickEvent, truncate};
use moka::sync::Cache;

/// Shown for a browser, OS or country that cannot be told.
pub const UNKNOWN: &str = "(unknown)";
/// The referrer of a click without a (readable) `Referer`: typed, bookmarked, or from an app.
pub const DIRECT: &str = "(direct)";

/// Distinct User-Agents whose families are kept: a stream sees few (browsers' versions, some
/// hundred fetchers), and parsing one costs a dozen regex matches.
const AGENT_CACHE_CAPACITY: u64 = 10_000;

/// One click, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub bot: bool,
    pub browser: Arc<str>,
    pub os: Arc<str>,
    pub device: &'static str,
    pub referrer: String,
    pub country: String,
}

/// What an agent says, apart from the bot verdict.
#[derive(Debug, Clone)]
struct Families {
    browser: Arc<str>,
    os: Arc<str>,
    /// `mobile`, `desktop`, `tablet` or `other` for a person's browser.
    device: &'static str,
}

/// Classifies click events. Clones share the caches.
#[derive(Clone)]
pub struct Classifier {
    bots: kurz_bots::Classifier,
    families: Cache<String, Families>,
    geoip: Option<Arc<GeoIp>>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("bots", &self.bots)
            .field("geoip", &self.geoip.is_some())
            .finish_non_exhaustive()
    }
}

impl Classifier {
    pub fn new(geoip: Option<GeoIp>) -> Self {
        Self {
            bots: kurz_bots::Classifier::new(AGENT_CACHE_CAPACITY),
            families: Cache::new(AGENT_CACHE_CAPACITY),
            geoip: geoip.map(Arc::new),
        }
    }

    pub fn classify(&self, event: &ClickEvent) -> Classified {
        // The link-management verdict: a missing agent is a bot, as it is there.
        let bot = self
            .bots
            .is_bot_header(event.user_agent.as_deref().map(str::as_bytes));
        let families = self.families(event.user_agent.as_deref().unwrap_or(""));
        Classified {
            bot,
            browser: families.browser,
            os: families.os,
            device: if bot { "bot" } else { families.device },
            referrer: referrer_host(event.referrer.as_deref()),
            country: self.country(event.ip_prefix),
        }
    }

    fn families(&self, agent: &str) -> Families {
        // Long agents are parsed every time rather than cached, as the bot classifier does,
        // so a client cannot fill the cache with huge keys.
        if agent.len() > kurz_bots::MAX_CACHED_LEN {
            return families(agent);
        }
        self.families.get_with_by_ref(agent, || families(agent))
    }

    fn country(&self, ip: Option<IpAddr>) -> String {
        match (&self.geoip, ip) {
            (Some(db), Some(ip)) => db.country(ip).unwrap_or_else(|| UNKNOWN.to_owned()),
            _ => UNKNOWN.to_owned(),
        }
    }
}

/// Browser and OS family and device class, by woothee.
fn families(agent: &str) -> Families {
    let parsed = woothee::parser::Parser::new().parse(agent);
    let Some(parsed) = parsed else {
        return Families {
            browser: Arc::from(UNKNOWN),
            os: Arc::from(UNKNOWN),
            device: "other",
        };
    };
    let os = os_family(parsed.os);
    let device = device_class(agent, os, parsed.category);
    Families {
        browser: Arc::from(known(parsed.name)),
        os: Arc::from(known(os)),
        device,
    }
}

/// woothee's name, or `(unknown)` for its `UNKNOWN`.
fn known(name: &str) -> &str {
    if name.is_empty() || name == woothee::woothee::VALUE_UNKNOWN {
        UNKNOWN
    } else {
        truncate(name, MAX_VALUE_BYTES)
    }
}

/// woothee names OS versions (`Windows 10`, `Mac OSX`, `iPhone`); the stats show families.
fn os_family(os: &str) -> &str {
    match os {
        "Mac OSX" => "macOS",
        "iPhone" | "iPad" | "iPod" | "iOS" => "iOS",
        "Windows Phone OS" => "Windows Phone",
        other if other.starts_with("Windows") => "Windows",
        other => other,
    }
}

/// `tablet`, `mobile`, `desktop` or `other`. Tablets first: woothee files iPads and Android
/// tablets under smartphones. An Android tablet's browser leaves `Mobile` out of its agent
/// (Google's advice to sites, followed by Chrome and Firefox).
fn device_class(agent: &str, os: &str, category: &str) -> &'static str {
    let android_tablet = os == "Android" && !agent.contains("Mobile");
    if agent.contains("iPad") || android_tablet || agent.contains("Tablet") {
        return "tablet";
    }
    match category {
        "smartphone" | "mobilephone" => "mobile",
        "pc" => "desktop",
        _ => "other",
    }
}

/// The referring page's host, lowercased; `(direct)` without a `Referer` or with one that is
/// not an absolute URL with a host.
pub fn referrer_host(referrer: Option<&str>) -> String {
    referrer
        .and_then(|r| url::Url::parse(r).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .filter(|h| !h.is_empty())
        .map(|h| truncate(&h, MAX_VALUE_BYTES).to_owned())
        .unwrap_or_else(|| DIRECT.to_owned())
}

/// A country database in MaxMind DB format, read into memory once.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

impl GeoIp {
    /// Opens and checks the database at `path`.
    pub fn open(path: &Path) -> Result<Self, maxminddb::MaxMindDbError> {
        Ok(Self {
            reader: maxminddb::Reader::open_readfile(path)?,
        })
    }

    /// The ISO 3166-1 code of `ip`'s country, if the database has one. Reads both layouts in
    /// use: MaxMind's (`country.iso_code`) and ip-location-db's (`country_code`).
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let found = self.reader.lookup(ip).ok()?;
        let code: Option<&str> = found
            .decode_path(&maxminddb::path!["country", "iso_code"])
            .ok()
            .flatten()
            .or_else(|| {
                found
                    .decode_path(&maxminddb::path!["country_code"])
                    .ok()
                    .flatten()
            });
        code.filter(|c| !c.is_empty() && c.len() <= MAX_VALUE_BYTES)
            .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use kurz_repository::clicks::ClickSource;

    const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const SAFARI_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 \
        (KHTML, like Gecko) Version/17.6 Safari/605.1.15";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) \
        AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1";
    const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 \
        (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1";
    const CHROME_ANDROID_PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) \
        AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
    const CHROME_ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 13; SM-X200) \
        AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    const EDGE_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
    const CHROME_OS: &str = "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 \
        (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const SLACKBOT: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";

    fn event(agent: Option<&str>, referrer: Option<&str>) -> ClickEvent {
        ClickEvent {
            code: "abc".to_owned(),
            at: Utc::now(),
            referrer: referrer.map(str::to_owned),
            user_agent: agent.map(str::to_owned),
            ip_prefix: Some("203.0.113.0".parse().expect("valid")),
            visitor: None,
            source: ClickSource::Link,
        }
    }

    fn classify(agent: &str) -> Classified {
        Classifier::new(None).classify(&event(Some(agent), None))
    }

    fn families_of(agent: &str) -> (String, String, &'static str) {
        let c = classify(agent);
        (c.browser.to_string(), c.os.to_string(), c.device)
    }

    #[test]
    fn desktop_browsers_get_their_family_and_os() {
        let cases = [
            (CHROME_WINDOWS, "Chrome", "Windows"),
            (SAFARI_MAC, "Safari", "macOS"),
            (FIREFOX_LINUX, "Firefox", "Linux"),
            (EDGE_WINDOWS, "Edge", "Windows"),
            (CHROME_OS, "Chrome", "ChromeOS"),
        ];
        for (agent, browser, os) in cases {
            assert_eq!(
                families_of(agent),
                (browser.to_owned(), os.to_owned(), "desktop"),
                "{agent}"
            );
        }
    }

    #[test]
    fn phones_are_mobile_and_tablets_are_tablets() {
        assert_eq!(
            families_of(SAFARI_IPHONE),
            ("Safari".to_owned(), "iOS".to_owned(), "mobile")
        );
        assert_eq!(
            families_of(CHROME_ANDROID_PHONE),
            ("Chrome".to_owned(), "Android".to_owned(), "mobile")
        );
        assert_eq!(
            families_of(SAFARI_IPAD),
            ("Safari".to_owned(), "iOS".to_owned(), "tablet")
        );
        assert_eq!(
            families_of(CHROME_ANDROID_TABLET),
            ("Chrome".to_owned(), "Android".to_owned(), "tablet")
        );
    }

    #[test]
    fn bots_are_bots_by_the_link_classifier_and_their_device_is_bot() {
        for agent in [GOOGLEBOT, SLACKBOT] {
            let c = classify(agent);
            assert!(c.bot, "{agent}");
            assert_eq!(c.device, "bot", "{agent}");
        }
        assert!(!classify(CHROME_WINDOWS).bot);
    }

    #[test]
    fn a_click_without_an_agent_is_a_bot_of_unknown_browser_and_os() {
        let c = Classifier::new(None).classify(&event(None, None));
        assert!(c.bot);
        assert_eq!((&*c.browser, &*c.os, c.device), (UNKNOWN, UNKNOWN, "bot"));
    }

    #[test]
    fn an_agent_woothee_cannot_read_has_unknown_families() {
        let c = classify("a9f8e7 d6c5b4");
        assert_eq!((&*c.browser, &*c.os), (UNKNOWN, UNKNOWN));
    }

    #[test]
    fn referrers_are_their_lowercased_host_or_direct() {
        let cases = [
            (Some("https://News.Example/item?id=1"), "news.example"),
            (Some("http://[2001:db8::1]:8080/x"), "[2001:db8::1]"),
            (Some("android-app://com.slack/"), "com.slack"),
            (Some("not a url"), DIRECT),
            (Some("/relative/path"), DIRECT),
            (Some("mailto:someone@example.com"), DIRECT),
            (Some(""), DIRECT),
            (None, DIRECT),
        ];
        for (referrer, host) in cases {
            assert_eq!(referrer_host(referrer), host, "{referrer:?}");
        }
    }

    #[test]
    fn without_a_database_every_country_is_unknown() {
        let c = Classifier::new(None).classify(&event(Some(CHROME_WINDOWS), None));
        assert_eq!(c.country, UNKNOWN);
    }
}
