//! Click events as they travel from the redirect service to the analytics worker: the event,
//! its encoding as a Redis stream entry, and the stream keys.
//!
//! One format, written by `kurz-redirect` and read by `kurz-analytics`, so the two cannot
//! drift apart. One stream entry carries one batch of clicks, so a batch costs Redis one
//! `XADD` rather than one per click. Its fields:
//!
//! | Field | Meaning |
//! | --- | --- |
//! | `n` | how many clicks the entry carries, as decimal text (for people reading it with `XRANGE`) |
//! | `e1` | the clicks, in [postcard](https://postcard.jamesmunns.com/wire-format) (format 1): a sequence of [`ClickEvent`]s |
//!
//! Each click, in the order postcard writes its fields:
//!
//! | Field | Meaning |
//! | --- | --- |
//! | `code` | the link's code |
//! | `at` | click time, Unix milliseconds |
//! | `referrer` | the `Referer` header, at most [`MAX_REFERRER_BYTES`], or none |
//! | `user_agent` | the `User-Agent` header, at most [`MAX_USER_AGENT_BYTES`], or none |
//! | `ip_prefix` | the client IP truncated to its /24 (IPv4) or /48 (IPv6), or none |
//! | `visitor` | the visitor hash, 16 bytes; none with `DNT: 1` or `Sec-GPC: 1` |
//! | `source` | `link` (0) or `qr` (1): a scan of the link's QR code, whose URL carries `qr=1` |
//!
//! Readers ignore entry fields they do not know, so a later format (`e2`) can be written
//! beside `e1` during an upgrade and the old field dropped once every reader knows the new one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Streams the events are spread over by default (`KURZ_CLICK_STREAMS`). One stream is one
/// Redis Cluster slot, so several let a cluster spread them over its masters.
pub const DEFAULT_STREAMS: u16 = 8;

/// The most streams a deployment may use.
pub const MAX_STREAMS: u16 = 256;

/// The consumer group every analytics worker reads through.
pub const GROUP: &str = "kurz-analytics";

/// Longest referrer kept, in bytes (cut at a character boundary).
pub const MAX_REFERRER_BYTES: usize = 512;

/// Longest User-Agent kept, in bytes (cut at a character boundary).
pub const MAX_USER_AGENT_BYTES: usize = 512;

/// The entry field with the number of clicks, as text.
pub const FIELD_COUNT: &str = "n";

/// The entry field with the clicks, format 1.
pub const FIELD_EVENTS: &str = "e1";

/// The key of stream `shard`. The shard number is the hash tag, so each stream has a slot of
/// its own on a cluster and the keys of one shard (only one today) stay together.
pub fn stream_key(shard: u16) -> String {
    format!("kurz:clicks:{{{shard}}}")
}

/// One click, as captured by the redirect service. Nothing in it identifies a person: the
/// full IP is used for the visitor hash and then dropped.
///
/// `S` is the text type: `String` as read back, and anything that serializes as a string
/// (`&str`, `Cow<str>`) when writing, so the redirect service encodes its batches without a
/// copy of every header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClickEvent<S = String> {
    pub code: S,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub at: DateTime<Utc>,
    pub referrer: Option<S>,
    pub user_agent: Option<S>,
    /// Already truncated ([`truncate_ip`]).
    pub ip_prefix: Option<IpAddr>,
    pub visitor: Option<[u8; 16]>,
    pub source: ClickSource,
}

/// How a click reached the link: the `source` dimension of the stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClickSource {
    /// The short URL itself.
    #[default]
    Link,
    /// The link's QR code (the short URL with `qr=1`).
    Qr,
}

impl ClickSource {
    /// The value in the `source` dimension.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Link => "link",
            Self::Qr => "qr",
        }
    }
}

/// Why a stream entry is not a batch of click events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{0}` is malformed")]
    Malformed(&'static str),
}

/// The fields of one stream entry carrying `events` ([`FIELD_COUNT`], then [`FIELD_EVENTS`]).
/// The texts are written as they are: bounding them is the capture's job.
pub fn entry_fields<S: Serialize>(events: &[ClickEvent<S>]) -> [(&'static str, Vec<u8>); 2] {
    // Writing to a Vec fails only for types postcard cannot represent, and a click has none.
    let encoded = postcard::to_allocvec(events).expect("click events always encode");
    [
        (FIELD_COUNT, events.len().to_string().into_bytes()),
        (FIELD_EVENTS, encoded),
    ]
}

/// Reads an entry's clicks back; unknown fields are ignored.
pub fn events_from_fields<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<ClickEvent>, DecodeError> {
    let (mut count, mut events) = (None, None);
    for (name, value) in fields {
        match name {
            FIELD_COUNT => {
                let n: usize = std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or(DecodeError::Malformed(FIELD_COUNT))?;
                count = Some(n);
            }
            FIELD_EVENTS => {
                let decoded: Vec<ClickEvent> = postcard::from_bytes(value)
                    .map_err(|_| DecodeError::Malformed(FIELD_EVENTS))?;
                events = Some(decoded);
            }
            _ => {}
        }
    }
    let events = events.ok_or(DecodeError::Missing(FIELD_EVENTS))?;
    // A count that disagrees means the entry is not what its writer meant: trust neither.
    match count {
        Some(n) if n != events.len() => Err(DecodeError::Malformed(FIELD_COUNT)),
        _ => Ok(events),
    }
}

/// The network an address belongs to, as much as is kept: its /24 for IPv4, its /48 for IPv6
/// (an IPv4-mapped IPv6 address counts as IPv4). Enough for a country; not a household.
pub fn truncate_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(truncate_v4(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(truncate_v4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
            }
        },
    }
}

fn truncate_v4(ip: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, _] = ip.octets();
    Ipv4Addr::new(a, b, c, 0)
}

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A dimension of the daily rollups (`click_daily.dimension`): what the analytics worker
/// counts per day and the stats API's top lists show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Referrer,
    Country,
    Browser,
    Os,
    Device,
    Source,
}

impl Dimension {
    pub const ALL: [Self; 6] = [
        Self::Referrer,
        Self::Country,
        Self::Browser,
        Self::Os,
        Self::Device,
        Self::Source,
    ];

    /// The name in `click_daily.dimension`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referrer => "referrer",
            Self::Country => "country",
            Self::Browser => "browser",
            Self::Os => "os",
            Self::Device => "device",
            Self::Source => "source",
        }
    }

    pub(crate) fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> ClickEvent {
        ClickEvent {
            code: "abc123".to_owned(),
            at: DateTime::from_timestamp_millis(1_764_600_000_123).expect("valid"),
            referrer: Some("https://news.example/item?id=1".to_owned()),
            user_agent: Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)".to_owned()),
            ip_prefix: Some("203.0.113.0".parse().expect("valid")),
            visitor: Some([0xab; 16]),
            source: ClickSource::Qr,
        }
    }

    fn decode(fields: &[(&'static str, Vec<u8>)]) -> Result<Vec<ClickEvent>, DecodeError> {
        events_from_fields(fields.iter().map(|(k, v)| (*k, v.as_slice())))
    }

    #[test]
    fn a_batch_survives_its_stream_encoding() {
        let sparse = ClickEvent {
            referrer: None,
            user_agent: None,
            ip_prefix: Some("2001:db8:abcd::".parse().expect("valid")),
            visitor: None,
            ..event()
        };
        let batch = vec![event(), sparse];
        let fields = entry_fields(&batch);
        assert_eq!(fields[0], ("n", b"2".to_vec()));
        assert_eq!(decode(&fields), Ok(batch));
    }

    #[test]
    fn borrowed_text_encodes_as_owned_text_does() {
        let owned = event();
        let borrowed = ClickEvent {
            code: owned.code.as_str(),
            at: owned.at,
            referrer: owned.referrer.as_deref(),
            user_agent: owned.user_agent.as_deref(),
            ip_prefix: owned.ip_prefix,
            visitor: owned.visitor,
            source: owned.source,
        };
        assert_eq!(entry_fields(&[borrowed]), entry_fields(&[owned]));
    }

    #[test]
    fn an_event_is_compact() {
        // Code, time, a 30-byte referrer, a 55-byte agent, an IPv4 prefix and a hash: the
        // texts plus about 30 bytes, against 245 as six text fields of one entry each.
        let [_, (_, bytes)] = entry_fields(&[event()]);
        assert!(bytes.len() < 6 + 30 + 55 + 40, "{} bytes", bytes.len());
    }

    #[test]
    fn unknown_fields_are_ignored_and_a_wrong_count_or_missing_events_are_errors() {
        let mut fields = entry_fields(&[event()]).to_vec();
        fields.push(("zz", b"later".to_vec()));
        assert_eq!(decode(&fields).map(|e| e.len()), Ok(1));
        fields[0].1 = b"3".to_vec();
        assert_eq!(decode(&fields), Err(DecodeError::Malformed("n")));
        fields.retain(|(k, _)| *k != "e1");
        assert_eq!(decode(&fields), Err(DecodeError::Missing("e1")));
        let garbage = [("e1", vec![0xff; 7])];
        assert_eq!(decode(&garbage), Err(DecodeError::Malformed("e1")));
    }

    #[test]
    fn ips_are_truncated_to_their_24_or_48() {
        let cases = [
            ("198.51.100.77", "198.51.100.0"),
            ("2001:db8:abcd:1234::1", "2001:db8:abcd::"),
            ("::ffff:198.51.100.77", "198.51.100.0"),
        ];
        for (ip, expected) in cases {
            let ip: IpAddr = ip.parse().expect("valid");
            assert_eq!(truncate_ip(ip).to_string(), expected);
        }
    }

    #[test]
    fn stream_keys_carry_the_shard_as_their_hash_tag() {
        assert_eq!(stream_key(3), "kurz:clicks:{3}");
    }
}
