//! `forward_query`: the request's query string merged into the target's.
//!
//! The rules (Shlink's, made precise):
//! - The target's parameters come first, in their order, then the request's, in theirs.
//! - A name in both: every occurrence of it in the target is dropped, and the request's
//!   occurrences (all of them, `tag=a&tag=b` stays two) come in the request's position. Names
//!   are compared decoded (`%5F` is `_`, `+` and `%20` are a space, as a form decoder reads
//!   them) and case-sensitively, as servers read them; `flag` without `=` is the name `flag`.
//! - Empty segments (`a=1&&b=2`) are dropped; everything else is copied byte for byte. Nothing
//!   is decoded and re-encoded, so `+` stays `+`, `%20` stays `%20` and `%2B` stays `%2B`.
//!   The only bytes changed are ones a URL may not hold raw in the query, which a WHATWG URL
//!   parser would percent-encode anyway (controls, space, `"`, `#`, `<`, `>`, `'`, non-ASCII):
//!   so the `Location` is a valid header and a URL that browsers read as we wrote it.
//! - The target's fragment stays last (a request never carries one).
//! - The request's `qr` parameters are never forwarded: `qr=1` marks a scan of the link's QR
//!   code ([`is_scan`]), which is Kurz's to count, not the target's to see.
//! - No request query (or only `&`s): the target unchanged, with nothing built.
//! - Longer than [`MAX_LOCATION_LEN`] once merged: [`Merge::TooLong`], which the handler
//!   answers 414, rather than silently dropping what the link's owner asked to forward.
//!
//! Why by hand: `url` and `form_urlencoded` decode each pair and serialize it again in their
//! own encoding (`%20` comes back as `+`, `~` may change), and a target server may sign or
//! compare its raw query; a split on `&` and `=` that compares decoded names but copies raw
//! pairs keeps every byte the target and the client sent. The name comparison is quadratic
//! in the number of pairs, bounded by the length limit checked first (a few thousand pairs at
//! most).

use actix_web::http::header::HeaderValue;
use bytes::Bytes;

/// The longest merged `Location`: 8 KiB, the create service's default URL limit and the
/// request-line limit of common servers (nginx's `large_client_header_buffers`), past which
/// the target would likely refuse the request anyway.
pub const MAX_LOCATION_LEN: usize = 8 * 1024;

/// The outcome of [`merge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// Nothing to add: redirect to the target as stored.
    Unchanged,
    Merged(HeaderValue),
    /// The merged `Location` would be longer than [`MAX_LOCATION_LEN`].
    TooLong,
}

/// The parameter that the QR codes of `GET /api/v1/links/{code}/qr` add to the short URL.
pub const SCAN_PARAMETER: &[u8] = b"qr";

/// Whether a request's raw `query` says it came from a QR code: a `qr` parameter (named as
/// a decoder reads it) with the value `1`.
pub fn is_scan(query: &[u8]) -> bool {
    pairs(query).any(|pair| same_name(pair, SCAN_PARAMETER) && split_at(pair, b'=').1 == Some(b"1"))
}

/// `target` (a stored URL) with the request's raw `query` merged in, by the module's rules.
pub fn merge(target: &[u8], query: &[u8]) -> Merge {
    if forwarded(query).next().is_none() {
        return Merge::Unchanged;
    }
    let (rest, fragment) = split_at(target, b'#');
    let (base, target_query) = split_at(rest, b'?');
    // Every request pair goes in, so past this it is too long whatever the target drops.
    if base.len() + 1 + query.len() > MAX_LOCATION_LEN {
        return Merge::TooLong;
    }
    let mut location = Vec::with_capacity(target.len() + query.len() + 1);
    location.extend_from_slice(base);
    let mut separator = b'?';
    for pair in pairs(target_query.unwrap_or_default()) {
        if !forwarded(query).any(|theirs| same_name(pair, theirs)) {
            location.push(separator);
            location.extend_from_slice(pair);
            separator = b'&';
        }
    }
    for pair in forwarded(query) {
        location.push(separator);
        push_query_bytes(&mut location, pair);
        separator = b'&';
    }
    if let Some(fragment) = fragment {
        location.push(b'#');
        location.extend_from_slice(fragment);
    }
    if location.len() > MAX_LOCATION_LEN {
        return Merge::TooLong;
    }
    match HeaderValue::from_maybe_shared(Bytes::from(location)) {
        Ok(location) => Merge::Merged(location),
        // Unreachable: the target is a valid header already and every byte added is visible
        // ASCII. Should it happen, the stored target is still a correct answer.
        Err(_) => {
            tracing::error!("a merged query did not make a valid Location header");
            Merge::Unchanged
        }
    }
}

/// The non-empty `&`-separated segments of a query.
fn pairs(query: &[u8]) -> impl Iterator<Item = &[u8]> {
    query.split(|&b| b == b'&').filter(|pair| !pair.is_empty())
}

/// The request's pairs that are forwarded: all but [`SCAN_PARAMETER`]'s.
fn forwarded(query: &[u8]) -> impl Iterator<Item = &[u8]> {
    pairs(query).filter(|pair| !same_name(pair, SCAN_PARAMETER))
}

/// `bytes` before and after the first `separator`, which is in neither.
fn split_at(bytes: &[u8], separator: u8) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|&b| b == separator) {
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
        None => (bytes, None),
    }
}

fn name(pair: &[u8]) -> &[u8] {
    split_at(pair, b'=').0
}

/// Whether two pairs have the same name once decoded.
fn same_name(ours: &[u8], theirs: &[u8]) -> bool {
    let (ours, theirs) = (name(ours), name(theirs));
    if ours == theirs {
        return true;
    }
    let encoded = |name: &[u8]| name.iter().any(|&b| b == b'%' || b == b'+');
    (encoded(ours) || encoded(theirs)) && Decoded::new(ours).eq(Decoded::new(theirs))
}

/// The bytes of a form-encoded name as a decoder reads them: `+` is a space, `%XX` is one
/// byte, and a `%` without two hex digits after it is itself.
struct Decoded<'a> {
    bytes: &'a [u8],
}

impl<'a> Decoded<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
}

impl Iterator for Decoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        let escaped = match (first, rest) {
            (b'%', [high, low, ..]) => hex(*high).zip(hex(*low)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        Some(match escaped {
            Some(byte) => {
                self.bytes = &rest[2..];
                byte
            }
            None => {
                self.bytes = rest;
                if first == b'+' { b' ' } else { first }
            }
        })
    }
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

/// Copies a request's pair, percent-encoding only the bytes WHATWG's query state encodes
/// for http(s) URLs (its "special-query percent-encode set"). Browsers send those encoded
/// already, so the usual pair is one copy.
fn push_query_bytes(location: &mut Vec<u8>, pair: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if !pair.iter().any(|&b| must_encode(b)) {
        location.extend_from_slice(pair);
        return;
    }
    for &b in pair {
        if must_encode(b) {
            location.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            location.push(b);
        }
    }
}

fn must_encode(b: u8) -> bool {
    b <= b' ' || b >= 0x7f || matches!(b, b'"' | b'#' | b'<' | b'>' | b'\'')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(target: &str, query: &str) -> String {
        match merge(target.as_bytes(), query.as_bytes()) {
            Merge::Unchanged => target.to_owned(),
            Merge::Merged(location) => location.to_str().expect("ascii").to_owned(),
            Merge::TooLong => panic!("too long"),
        }
    }

    #[test]
    fn the_scan_marker_is_never_forwarded_and_the_targets_own_qr_stays() {
        assert_eq!(merged("https://t.example/", "qr=1"), "https://t.example/");
        assert_eq!(
            merged("https://t.example/?a=1", "qr=1&utm=x&%71r=2"),
            "https://t.example/?a=1&utm=x"
        );
        assert_eq!(
            merged("https://t.example/?qr=owner", "qr=1&b=2"),
            "https://t.example/?qr=owner&b=2"
        );
    }

    #[test]
    fn only_qr_1_is_a_scan() {
        for scan in ["qr=1", "a=b&qr=1", "%71r=1"] {
            assert!(is_scan(scan.as_bytes()), "{scan}");
        }
        for not_scan in ["", "qr", "qr=", "qr=0", "qr=11", "xqr=1", "a=qr=1"] {
            assert!(!is_scan(not_scan.as_bytes()), "{not_scan}");
        }
    }

    #[test]
    fn without_a_request_query_the_target_is_unchanged() {
        assert_eq!(merge(b"https://t.example/?a=1", b""), Merge::Unchanged);
        assert_eq!(merge(b"https://t.example/?a=1", b"&&"), Merge::Unchanged);
    }

    #[test]
    fn the_request_query_is_added_to_a_target_without_one() {
        assert_eq!(
            merged("https://t.example/p", "x=1&y=2"),
            "https://t.example/p?x=1&y=2"
        );
        assert_eq!(
            merged("https://t.example/p?", "x=1"),
            "https://t.example/p?x=1"
        );
    }

    #[test]
    fn the_target_parameters_come_first_then_the_request_ones() {
        assert_eq!(
            merged("https://t.example/?a=1&b=2", "c=3&d=4"),
            "https://t.example/?a=1&b=2&c=3&d=4"
        );
    }

    #[test]
    fn a_repeated_name_takes_the_request_value_in_the_request_position() {
        assert_eq!(
            merged("https://t.example/?a=1&b=2&a=3&c=4", "d=5&a=9"),
            "https://t.example/?b=2&c=4&d=5&a=9"
        );
        // Every occurrence in the request stays; a bare name counts as that name.
        assert_eq!(
            merged("https://t.example/?tag=x&flag=1", "tag=a&tag=b&flag"),
            "https://t.example/?tag=a&tag=b&flag"
        );
    }

    #[test]
    fn names_are_compared_decoded_but_copied_raw() {
        assert_eq!(
            merged(
                "https://t.example/?utm%5Fsource=kurz&a+b=1",
                "utm_source=news&a%20b=2"
            ),
            "https://t.example/?utm_source=news&a%20b=2"
        );
        // `%2B` is a plus, not a space; names differ in case.
        assert_eq!(
            merged("https://t.example/?a+b=1&Q=1", "a%2Bb=2&q=2"),
            "https://t.example/?a+b=1&Q=1&a%2Bb=2&q=2"
        );
    }

    #[test]
    fn the_fragment_stays_last() {
        assert_eq!(
            merged("https://t.example/p?a=1#top", "b=2"),
            "https://t.example/p?a=1&b=2#top"
        );
        assert_eq!(
            merged("https://t.example/p#s?x=1", "b=2"),
            "https://t.example/p?b=2#s?x=1"
        );
    }

    #[test]
    fn encodings_are_kept_as_they_came() {
        assert_eq!(
            merged(
                "https://t.example/?q=a+b&r=%7E",
                "s=c+d&t=c%20d&u=%2B&v=caf%C3%A9&w=%zz"
            ),
            "https://t.example/?q=a+b&r=%7E&s=c+d&t=c%20d&u=%2B&v=caf%C3%A9&w=%zz"
        );
    }

    #[test]
    fn only_bytes_a_url_cannot_hold_raw_are_encoded() {
        assert_eq!(
            merged("https://t.example/", "a='x'&b=\"<>\"&c=|{}^"),
            "https://t.example/?a=%27x%27&b=%22%3C%3E%22&c=|{}^"
        );
    }

    #[test]
    fn the_result_is_a_url_a_whatwg_parser_leaves_as_it_is() {
        for (target, query) in [
            ("https://t.example/a?x=1&y=%20#f", "y=2&z=a+b&w=%C3%A9"),
            ("https://t.example/", "a='&b=|"),
        ] {
            let location = merged(target, query);
            let parsed = url::Url::parse(&location).expect("a URL");
            assert_eq!(parsed.as_str(), location);
        }
    }

    #[test]
    fn a_merge_past_the_limit_is_too_long() {
        let target = format!("https://t.example/?keep={}", "k".repeat(4_000));
        let query = format!("add={}", "q".repeat(4_200));
        assert_eq!(merge(target.as_bytes(), query.as_bytes()), Merge::TooLong);
        let huge = "q".repeat(MAX_LOCATION_LEN);
        assert_eq!(
            merge(b"https://t.example/", huge.as_bytes()),
            Merge::TooLong
        );
        // A merge that replaces a long parameter may end up within the limit.
        let query = format!("keep={}", "q".repeat(4_000));
        assert!(matches!(
            merge(target.as_bytes(), query.as_bytes()),
            Merge::Merged(_)
        ));
    }
}
