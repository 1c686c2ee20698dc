//! The rules a create request must pass. Each failure has its own stable error code, listed
//! in the workspace README; the message is for people and may change.
//!
//! - [`targets`]: which hosts are private (`url_private_target`).
//! - [`properties`]: what every answer of [`UrlPolicy::normalize`] satisfies, checked by the
//!   property tests and the fuzz target.

pub mod properties;
pub mod targets;

use chrono::{DateTime, Utc};
use kurz_repository::codes::{MAX_CODE_LEN, MIN_CODE_LEN};
use url::{Host, Url};

use crate::blocklist::SharedBlocklist;

/// Paths the services route, or will: an alias must never shadow them. Compared
/// case-insensitively, so `API` or `Docs` cannot confuse a person reading a link either.
pub const RESERVED_ALIASES: &[&str] = &[
    "api", "healthz", "readyz", "livez", "metrics", "docs", "openapi", "swagger", "static",
    "assets", "admin", "login", "logout", "qr", "stats", "favicon", "robots", "sitemap",
    // `/api/v1/links/count` and `/api/v1/links/bulk` sit where a code would.
    "count", "bulk",
];

/// The largest visit limit: a trillion is beyond any real campaign and far inside `bigint`.
pub const MAX_VISITS: i64 = 1_000_000_000_000;

/// The statuses a link may redirect with. 303 is left out: it tells the client to switch to
/// `GET`, which a link that is only ever followed with `GET` does not need.
pub const REDIRECT_STATUSES: [u16; 4] = [301, 302, 307, 308];

/// Why a request was refused; every one is answered 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("the url is not an absolute URL: {0}")]
    InvalidUrl(String),
    #[error("the url is longer than {0} bytes")]
    UrlTooLong(usize),
    #[error("the url scheme `{0}` is not allowed: use http or https")]
    UnsupportedScheme(String),
    #[error(
        "the url contains control characters, whitespace other than spaces, or invisible characters"
    )]
    UrlInvalidCharacters,
    #[error("the url must not contain a user name or password")]
    UrlHasCredentials,
    #[error("the url has no host")]
    UrlMissingHost,
    #[error("the url points to this shortener (`{0}`), which would loop")]
    UrlSelfReference(String),
    #[error(
        "the url points to a local or private address (`{0}`), which only works inside one network"
    )]
    UrlPrivateTarget(String),
    #[error("the url's domain is blocked (`{0}` is on the blocklist)")]
    UrlBlocked(String),
    #[error(
        "the alias must be {MIN_CODE_LEN} to {MAX_CODE_LEN} characters of A-Z, a-z, 0-9, _ and -"
    )]
    InvalidAlias,
    #[error("the alias `{0}` is reserved")]
    AliasReserved(String),
    #[error("expires_at is not an RFC 3339 date-time such as 2030-01-31T12:00:00Z")]
    InvalidExpiresAt,
    #[error("expires_at must be in the future")]
    ExpiresAtInPast,
    #[error("redirect_status must be 301, 302, 307 or 308")]
    InvalidRedirectStatus,
    #[error("max_visits must be a whole number from 1 to {MAX_VISITS}")]
    InvalidMaxVisits,
    #[error("expired_url is not acceptable: {0}")]
    InvalidExpiredUrl(Box<ValidationError>),
}

impl ValidationError {
    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "invalid_url",
            Self::UrlTooLong(_) => "url_too_long",
            Self::UnsupportedScheme(_) => "unsupported_scheme",
            Self::UrlInvalidCharacters => "url_invalid_characters",
            Self::UrlHasCredentials => "url_has_credentials",
            Self::UrlMissingHost => "url_missing_host",
            Self::UrlSelfReference(_) => "url_self_reference",
            Self::UrlPrivateTarget(_) => "url_private_target",
            Self::UrlBlocked(_) => "url_blocked",
            Self::InvalidAlias => "invalid_alias",
            Self::AliasReserved(_) => "alias_reserved",
            Self::InvalidExpiresAt => "invalid_expires_at",
            Self::ExpiresAtInPast => "expires_at_in_past",
            Self::InvalidRedirectStatus => "invalid_redirect_status",
            Self::InvalidMaxVisits => "invalid_max_visits",
            Self::InvalidExpiredUrl(_) => "invalid_expired_url",
        }
    }
}

/// What target URLs may be.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    pub max_length: usize,
    /// Hosts of the shortener itself (lower case, no trailing dot): targets there would loop.
    pub own_hosts: Vec<String>,
    /// `KURZ_ALLOW_PRIVATE_TARGETS`: accept hosts that [`targets`] calls private.
    pub allow_private_targets: bool,
    /// Domains refused with their subdomains; replaced whole when the file is reloaded.
    pub blocklist: SharedBlocklist,
}

impl UrlPolicy {
    /// A policy with the defaults of the settings: private targets refused, the built-in
    /// blocklist of link shorteners.
    pub fn new(max_length: usize, public_base_url: &Url) -> Self {
        let own_hosts = public_base_url
            .host_str()
            .map(|h| vec![canonical_host(h)])
            .unwrap_or_default();
        Self {
            max_length,
            own_hosts,
            allow_private_targets: false,
            blocklist: SharedBlocklist::default(),
        }
    }

    /// Checks `raw` and returns its WHATWG normalization, which is what gets stored and
    /// redirected to. The rules run in the order of the README's table: length, characters,
    /// parse, scheme, credentials, host, self-reference, private target, blocklist.
    pub fn normalize(&self, raw: &str) -> Result<String, ValidationError> {
        let url = self.parse(raw)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ValidationError::UnsupportedScheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ValidationError::UrlHasCredentials);
        }
        self.check_host(&url)?;
        let normalized = String::from(url);
        // Normalization percent-encodes and punycodes, so it can grow past the limit.
        if normalized.len() > self.max_length {
            return Err(ValidationError::UrlTooLong(self.max_length));
        }
        Ok(normalized)
    }

    /// [`Self::normalize`] for an `expired_url`: the same rules, since it is a redirect target
    /// too, under its own error code so a client knows which field failed.
    pub fn normalize_expired_url(&self, raw: &str) -> Result<String, ValidationError> {
        self.normalize(raw)
            .map_err(|e| ValidationError::InvalidExpiredUrl(Box::new(e)))
    }

    /// Length, characters, then the WHATWG parser.
    fn parse(&self, raw: &str) -> Result<Url, ValidationError> {
        if raw.len() > self.max_length {
            return Err(ValidationError::UrlTooLong(self.max_length));
        }
        // People paste URLs with spaces around them; only the plain space is trimmed, since a
        // tab or newline there is as suspicious as anywhere else.
        let trimmed = raw.trim_matches(' ');
        // The WHATWG parser silently strips leading and trailing control characters and drops
        // tabs and newlines anywhere. A link whose meaning depends on that (or on characters a
        // person cannot see) is a trick, not a typo: refuse it instead. Spaces inside are
        // kept: the parser percent-encodes them in the path, query and fragment (as browsers
        // do) and refuses them in the host.
        if trimmed.chars().any(is_refused_char) {
            return Err(ValidationError::UrlInvalidCharacters);
        }
        Url::parse(trimmed).map_err(|e| match e {
            url::ParseError::EmptyHost => ValidationError::UrlMissingHost,
            other => ValidationError::InvalidUrl(other.to_string()),
        })
    }

    /// Host present, not this shortener, not private, not blocked.
    fn check_host(&self, url: &Url) -> Result<(), ValidationError> {
        let name = url.host_str().map(canonical_host).unwrap_or_default();
        // `https://./` (or `%2e`) parses, with a host of dots that names nothing.
        let Some(host) = url.host().filter(|_| !name.is_empty()) else {
            return Err(ValidationError::UrlMissingHost);
        };
        if self.own_hosts.contains(&name) {
            return Err(ValidationError::UrlSelfReference(name));
        }
        // The parsed host, not the text: the parser reads `2130706433`, `127.1` and
        // `0x7f.1` as 127.0.0.1.
        let private = match host {
            Host::Domain(_) => targets::is_local_name(&name),
            Host::Ipv4(ip) => targets::is_private_ipv4(ip),
            Host::Ipv6(ip) => targets::is_private_ipv6(ip),
        };
        if private && !self.allow_private_targets {
            return Err(ValidationError::UrlPrivateTarget(name));
        }
        // The list holds domains; an IP address never matches it.
        if let Host::Domain(_) = host
            && let Some(entry) = self.blocklist.find(&name)
        {
            return Err(ValidationError::UrlBlocked(entry));
        }
        Ok(())
    }
}

/// Lower case without a trailing dot: `Kurz.Example.` and `kurz.example` are one host.
fn canonical_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Control characters (C0, DEL, C1), Unicode whitespace other than the plain space (tabs,
/// newlines, no-break and other wide spaces), and the invisible formatting characters used to
/// disguise text (zero-width spaces and joiners, bidirectional overrides, the byte-order mark,
/// the soft hyphen).
fn is_refused_char(c: char) -> bool {
    c != ' '
        && (c.is_control()
            || c.is_whitespace()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}'))
}

/// Checks a per-link redirect status.
pub fn check_redirect_status(status: u16) -> Result<u16, ValidationError> {
    if REDIRECT_STATUSES.contains(&status) {
        Ok(status)
    } else {
        Err(ValidationError::InvalidRedirectStatus)
    }
}

/// Checks a visit limit.
pub fn check_max_visits(max: i64) -> Result<i64, ValidationError> {
    if (1..=MAX_VISITS).contains(&max) {
        Ok(max)
    } else {
        Err(ValidationError::InvalidMaxVisits)
    }
}

/// Checks a custom alias.
pub fn check_alias(alias: &str) -> Result<(), ValidationError> {
    if !kurz_repository::codes::is_well_formed(alias) {
        return Err(ValidationError::InvalidAlias);
    }
    if RESERVED_ALIASES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(alias))
    {
        return Err(ValidationError::AliasReserved(alias.to_owned()));
    }
    Ok(())
}

/// Parses an RFC 3339 expiry that must lie after `now`.
pub fn parse_expires_at(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ValidationError> {
    let at = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| ValidationError::InvalidExpiresAt)?
        .with_timezone(&Utc);
    if at <= now {
        return Err(ValidationError::ExpiresAtInPast);
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::blocklist::Blocklist;

    fn policy() -> UrlPolicy {
        UrlPolicy::new(8_192, &Url::parse("https://kurz.example/").expect("valid"))
    }

    fn code_of(raw: &str) -> &'static str {
        policy().normalize(raw).err().map_or("ok", |e| e.code())
    }

    #[test]
    fn urls_are_normalized_by_whatwg_rules() {
        let p = policy();
        assert_eq!(
            p.normalize("HTTPS://Example.COM").as_deref(),
            Ok("https://example.com/")
        );
        assert_eq!(
            p.normalize("http://example.com:80/a/../b?q=1#f").as_deref(),
            Ok("http://example.com/b?q=1#f")
        );
        assert_eq!(
            p.normalize("https://bücher.example/").as_deref(),
            Ok("https://xn--bcher-kva.example/")
        );
    }

    #[test]
    fn spaces_inside_are_percent_encoded_and_spaces_around_are_trimmed() {
        let p = policy();
        assert_eq!(
            p.normalize("https://example.com/my file.pdf").as_deref(),
            Ok("https://example.com/my%20file.pdf")
        );
        assert_eq!(
            p.normalize("  https://example.com/a b?q=x y#p q  ")
                .as_deref(),
            Ok("https://example.com/a%20b?q=x%20y#p%20q")
        );
        assert_eq!(code_of("https://exa mple.com/"), "invalid_url");
        assert_eq!(code_of("https:// example.com/"), "invalid_url");
        for refused in [
            "\thttps://example.com/",
            "https://example.com/\n",
            "https://example.com/a\r\nb",
            "https://example.com/a\u{A0}b",
            "\u{3000}https://example.com/",
            "https://example.com/a\u{2009}b",
        ] {
            assert_eq!(code_of(refused), "url_invalid_characters", "{refused:?}");
        }
    }

    #[test]
    fn private_targets_are_refused_in_every_form_the_parser_reads() {
        for private in [
            "http://localhost/",
            "http://LOCALHOST./",
            "http://foo.localhost:8080/",
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://127.1/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[64:ff9b::a00:1]/",
            "http://10.0.0.1/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::]/",
            "http://[fd00::1]/",
            "http://[ff02::1]/",
        ] {
            assert_eq!(code_of(private), "url_private_target", "{private}");
        }
        for public in [
            "http://93.184.216.34/",
            "http://[2606:2800:220:1:248:1893:25c8:1946]/",
            "http://localhost.example/",
            "http://100.128.0.1/",
        ] {
            assert_eq!(code_of(public), "ok", "{public}");
        }
    }

    #[test]
    fn private_targets_are_accepted_when_allowed() {
        let p = UrlPolicy {
            allow_private_targets: true,
            ..policy()
        };
        assert_eq!(
            p.normalize("http://2130706433/").as_deref(),
            Ok("http://127.0.0.1/")
        );
        assert_eq!(
            p.normalize("http://Intranet.LOCALHOST./").as_deref(),
            Ok("http://intranet.localhost./")
        );
    }

    #[test]
    fn blocked_domains_and_their_subdomains_are_refused() {
        for blocked in [
            "https://bit.ly/x",
            "https://www.bit.ly/x",
            "https://BIT.LY./x",
            "http://tinyurl.com/abc",
        ] {
            assert_eq!(code_of(blocked), "url_blocked", "{blocked}");
        }
        assert_eq!(
            policy().normalize("https://www.bit.ly/x"),
            Err(ValidationError::UrlBlocked("bit.ly".into()))
        );
        assert_eq!(code_of("https://notbit.ly/"), "ok");
        let p = UrlPolicy {
            blocklist: SharedBlocklist::new(Arc::new(Blocklist::default())),
            ..policy()
        };
        assert_eq!(
            p.normalize("https://bit.ly/x").as_deref(),
            Ok("https://bit.ly/x")
        );
    }

    #[test]
    fn the_first_failing_rule_answers() {
        let own_ip = UrlPolicy::new(8_192, &Url::parse("http://127.0.0.1:8080/").expect("valid"));
        assert_eq!(
            own_ip.normalize("http://127.0.0.1/x").map_err(|e| e.code()),
            Err("url_self_reference")
        );
        assert_eq!(code_of("http://user@localhost/"), "url_has_credentials");
        assert_eq!(code_of("ftp://localhost/"), "unsupported_scheme");
        let blocked_local = UrlPolicy {
            blocklist: SharedBlocklist::new(Arc::new(
                Blocklist::parse("localhost").expect("valid"),
            )),
            ..policy()
        };
        assert_eq!(
            blocked_local
                .normalize("http://localhost/")
                .map_err(|e| e.code()),
            Err("url_private_target")
        );
    }

    #[test]
    fn each_rule_has_its_code() {
        assert_eq!(code_of("not a url"), "invalid_url");
        assert_eq!(code_of("example.com/path"), "invalid_url");
        assert_eq!(code_of("ftp://example.com/"), "unsupported_scheme");
        assert_eq!(code_of("javascript:alert(1)"), "unsupported_scheme");
        assert_eq!(
            code_of("https://user:pw@example.com/"),
            "url_has_credentials"
        );
        assert_eq!(code_of("https://user@example.com/"), "url_has_credentials");
        assert_eq!(code_of("http://"), "url_missing_host");
        assert_eq!(code_of("https://./"), "url_missing_host");
        assert_eq!(code_of("http://%2e%2E./x"), "url_missing_host");
        assert_eq!(code_of("https://KURZ.example./x"), "url_self_reference");
        assert_eq!(code_of(" https://example.com/ "), "ok");
        assert_eq!(
            code_of("https://example.com/\u{A0}"),
            "url_invalid_characters"
        );
        assert_eq!(code_of("https://exa\tmple.com/"), "url_invalid_characters");
        assert_eq!(
            code_of("https://example.com/\u{202E}gpj.exe"),
            "url_invalid_characters"
        );
        assert_eq!(
            code_of("https://exam\u{200B}ple.com/"),
            "url_invalid_characters"
        );
        assert_eq!(
            code_of(&format!("https://example.com/{}", "a".repeat(8_192))),
            "url_too_long"
        );
        assert_eq!(code_of("https://example.com/ok"), "ok");
    }

    #[test]
    fn aliases() {
        assert_eq!(check_alias("my-link_1"), Ok(()));
        assert_eq!(
            check_alias("ab").err().map(|e| e.code()),
            Some("invalid_alias")
        );
        assert_eq!(
            check_alias("with space").err().map(|e| e.code()),
            Some("invalid_alias")
        );
        assert_eq!(
            check_alias("a/b").err().map(|e| e.code()),
            Some("invalid_alias")
        );
        assert_eq!(
            check_alias("Healthz").err().map(|e| e.code()),
            Some("alias_reserved")
        );
        assert_eq!(
            check_alias("api").err().map(|e| e.code()),
            Some("alias_reserved")
        );
    }

    #[test]
    fn expiry_must_be_rfc3339_and_in_the_future() {
        let now = Utc::now();
        assert!(parse_expires_at("2999-01-01T00:00:00Z", now).is_ok());
        assert!(parse_expires_at("2999-01-01T00:00:00+02:00", now).is_ok());
        assert_eq!(
            parse_expires_at("2000-01-01T00:00:00Z", now),
            Err(ValidationError::ExpiresAtInPast)
        );
        assert_eq!(
            parse_expires_at("tomorrow", now),
            Err(ValidationError::InvalidExpiresAt)
        );
        assert_eq!(
            parse_expires_at("2999-01-01", now),
            Err(ValidationError::InvalidExpiresAt)
        );
    }
}
