//! The response headers of a decision.
//!
//! - `RateLimit-Policy: "<policy>";q=<quota>;w=<window seconds>` and
//!   `RateLimit: "<policy>";r=<remaining>;t=<seconds until the quota is whole again>`, the
//!   fields of draft-ietf-httpapi-ratelimit-headers (-09 and later): Structured Field lists
//!   whose items are the quoted policy name with parameters.
//! - `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`, the de-facto
//!   headers most clients know. `X-RateLimit-Reset` is a number of seconds from now (a
//!   delta, like `t`), not a Unix time as some APIs use.
//! - `Retry-After: <seconds>` (RFC 9110, whole seconds, at least 1) on a refusal.
//!
//! Names are lowercase, as HTTP/2 sends them, so they can become header names unchecked.

use std::time::Duration;

use crate::quota::ceil_secs;

/// The values every header is rendered from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    pub policy: &'static str,
    pub quota: u32,
    pub window: Duration,
    pub remaining: u32,
    pub reset: Duration,
    pub retry_after: Option<Duration>,
}

pub(crate) fn render(f: Fields) -> Vec<(&'static str, String)> {
    let (policy, quota, remaining) = (f.policy, f.quota, f.remaining);
    let window = ceil_secs(f.window).max(1);
    let reset = ceil_secs(f.reset);
    let mut headers = vec![
        (
            "ratelimit-policy",
            format!("\"{policy}\";q={quota};w={window}"),
        ),
        ("ratelimit", format!("\"{policy}\";r={remaining};t={reset}")),
        ("x-ratelimit-limit", quota.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ];
    if let Some(wait) = f.retry_after {
        headers.push(("retry-after", ceil_secs(wait).max(1).to_string()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        Fields {
            policy: "api_key",
            quota: 600,
            window: Duration::from_secs(60),
            remaining: 599,
            reset: Duration::from_millis(100),
            retry_after: None,
        }
    }

    #[test]
    fn an_allowed_request_gets_the_policy_and_what_remains() {
        assert_eq!(
            render(fields()),
            [
                ("ratelimit-policy", "\"api_key\";q=600;w=60".to_owned()),
                ("ratelimit", "\"api_key\";r=599;t=1".to_owned()),
                ("x-ratelimit-limit", "600".to_owned()),
                ("x-ratelimit-remaining", "599".to_owned()),
                ("x-ratelimit-reset", "1".to_owned()),
            ]
        );
    }

    #[test]
    fn a_refused_request_also_gets_retry_after_in_whole_seconds() {
        let headers = render(Fields {
            remaining: 0,
            reset: Duration::from_millis(59_900),
            retry_after: Some(Duration::from_millis(1_200)),
            ..fields()
        });
        assert!(headers.contains(&("ratelimit", "\"api_key\";r=0;t=60".to_owned())));
        assert!(headers.contains(&("x-ratelimit-reset", "60".to_owned())));
        assert_eq!(headers.last(), Some(&("retry-after", "2".to_owned())));
    }

    #[test]
    fn a_whole_quota_resets_in_zero_seconds_and_windows_are_at_least_one() {
        let headers = render(Fields {
            window: Duration::from_millis(10),
            reset: Duration::ZERO,
            ..fields()
        });
        assert_eq!(headers[0].1, "\"api_key\";q=600;w=1");
        assert_eq!(headers[1].1, "\"api_key\";r=599;t=0");
    }

    #[test]
    fn every_name_is_a_valid_lowercase_header_name() {
        let headers = render(Fields {
            retry_after: Some(Duration::from_secs(1)),
            ..fields()
        });
        for (name, value) in headers {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{name}"
            );
            assert!(value.bytes().all(|b| b.is_ascii_graphic()), "{value}");
        }
    }
}
