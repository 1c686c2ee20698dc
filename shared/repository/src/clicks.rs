//! Click events as they travel from the redirect service to the analytics worker: the event,
//! its encoding as a Redis stream entry, and the stream keys.
//!
//! One format, written by `kurz-redirect` and read by `kurz-analytics`, so the two cannot
//! drift apart. An entry's fields (all values UTF-8 text, absent fields omitted):
//!
//! | Field | Meaning |
//! | --- | --- |
//! | `c` | the link's code |
//! | `t` | click time, Unix milliseconds |
//! | `r` | the `Referer` header, at most [`MAX_REFERRER_BYTES`] |
//! | `u` | the `User-Agent` header, at most [`MAX_USER_AGENT_BYTES`] |
//! | `i` | the client IP truncated to its /24 (IPv4) or /48 (IPv6) |
//! | `v` | the visitor hash, 32 hex digits; absent with `DNT: 1` or `Sec-GPC: 1` |
//!
//! Readers ignore fields they do not know, so a field can be added without a flag day.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};

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

/// The key of stream `shard`. The shard number is the hash tag, so each stream has a slot of
/// its own on a cluster and the keys of one shard (only one today) stay together.
pub fn stream_key(shard: u16) -> String {
    format!("kurz:clicks:{{{shard}}}")
}

/// One click, as captured by the redirect service. Nothing in it identifies a person: the
/// full IP is used for the visitor hash and then dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickEvent {
    pub code: String,
    pub at: DateTime<Utc>,
    pub referrer: Option<String>,
    pub user_agent: Option<String>,
    /// Already truncated ([`truncate_ip`]).
    pub ip_prefix: Option<IpAddr>,
    pub visitor: Option<[u8; 16]>,
}

/// Why a stream entry is not a click event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{0}` is malformed")]
    Malformed(&'static str),
}

impl ClickEvent {
    /// The entry's fields, in the order of the table above.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = Vec::with_capacity(6);
        fields.push(("c", self.code.clone()));
        fields.push(("t", self.at.timestamp_millis().to_string()));
        if let Some(referrer) = &self.referrer {
            fields.push(("r", truncate(referrer, MAX_REFERRER_BYTES).to_owned()));
        }
        if let Some(agent) = &self.user_agent {
            fields.push(("u", truncate(agent, MAX_USER_AGENT_BYTES).to_owned()));
        }
        if let Some(ip) = self.ip_prefix {
            fields.push(("i", ip.to_string()));
        }
        if let Some(visitor) = &self.visitor {
            fields.push(("v", hex(visitor)));
        }
        fields
    }

    /// Reads an entry's fields back; unknown fields are ignored.
    pub fn from_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, DecodeError> {
        let (mut code, mut at) = (None, None);
        let mut event = ClickEvent {
            code: String::new(),
            at: DateTime::UNIX_EPOCH,
            referrer: None,
            user_agent: None,
            ip_prefix: None,
            visitor: None,
        };
        for (name, value) in fields {
            let text =
                |field| std::str::from_utf8(value).map_err(|_| DecodeError::Malformed(field));
            match name {
                "c" => code = Some(text("c")?.to_owned()),
                "t" => {
                    let millis: i64 = text("t")?
                        .parse()
                        .map_err(|_| DecodeError::Malformed("t"))?;
                    at = Some(
                        DateTime::from_timestamp_millis(millis)
                            .ok_or(DecodeError::Malformed("t"))?,
                    );
                }
                "r" => event.referrer = Some(text("r")?.to_owned()),
                "u" => event.user_agent = Some(text("u")?.to_owned()),
                "i" => {
                    let ip = text("i")?
                        .parse()
                        .map_err(|_| DecodeError::Malformed("i"))?;
                    event.ip_prefix = Some(ip);
                }
                "v" => event.visitor = Some(unhex(text("v")?).ok_or(DecodeError::Malformed("v"))?),
                _ => {}
            }
        }
        event.code = code.ok_or(DecodeError::Missing("c"))?;
        event.at = at.ok_or(DecodeError::Missing("t"))?;
        Ok(event)
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

fn hex(bytes: &[u8; 16]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
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
}

impl Dimension {
    pub const ALL: [Self; 5] = [
        Self::Referrer,
        Self::Country,
        Self::Browser,
        Self::Os,
        Self::Device,
    ];

    /// The name in `click_daily.dimension`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referrer => "referrer",
            Self::Country => "country",
            Self::Browser => "browser",
            Self::Os => "os",
            Self::Device => "device",
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
        }
    }

    fn decode(fields: &[(&'static str, String)]) -> Result<ClickEvent, DecodeError> {
        ClickEvent::from_fields(fields.iter().map(|(k, v)| (*k, v.as_bytes())))
    }

    #[test]
    fn an_event_survives_its_stream_encoding() {
        let event = event();
        assert_eq!(decode(&event.fields()), Ok(event));
    }

    #[test]
    fn optional_fields_are_left_out_and_come_back_as_none() {
        let event = ClickEvent {
            referrer: None,
            user_agent: None,
            ip_prefix: None,
            visitor: None,
            ..event()
        };
        let fields = event.fields();
        assert_eq!(fields.len(), 2);
        assert_eq!(decode(&fields), Ok(event));
    }

    #[test]
    fn unknown_fields_are_ignored_and_a_missing_code_is_an_error() {
        let mut fields = event().fields();
        fields.push(("zz", "later".to_owned()));
        assert!(decode(&fields).is_ok());
        fields.retain(|(k, _)| *k != "c");
        assert_eq!(decode(&fields), Err(DecodeError::Missing("c")));
    }

    #[test]
    fn long_headers_are_cut_at_a_character_boundary() {
        let agent = "é".repeat(400); // 800 bytes
        let event = ClickEvent {
            user_agent: Some(agent),
            ..event()
        };
        let decoded = decode(&event.fields()).expect("valid");
        let kept = decoded.user_agent.expect("kept");
        assert!(kept.len() <= MAX_USER_AGENT_BYTES && kept.len() >= MAX_USER_AGENT_BYTES - 1);
        assert!(kept.chars().all(|c| c == 'é'));
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
