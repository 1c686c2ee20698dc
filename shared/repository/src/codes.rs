//! Codes: the alphabet, the checks every service applies before a lookup, and key generation.
//!
//! A code is either a generated key (base62, 7 characters by default) or a custom alias
//! (3 to 64 characters of `[A-Za-z0-9_-]`). Both share one namespace and one alphabet.

use rand::distr::{Alphanumeric, SampleString};

/// Shortest code the services accept (the shortest alias).
pub const MIN_CODE_LEN: usize = 3;
/// Longest code the services accept (the longest alias).
pub const MAX_CODE_LEN: usize = 64;

/// Whether `code` can possibly exist. Anything else is answered 404 without touching Redis or
/// PostgreSQL, so junk and probes cost nothing.
pub fn is_well_formed(code: &str) -> bool {
    (MIN_CODE_LEN..=MAX_CODE_LEN).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Appends `count` random base62 keys of `length` characters to `out`, one per line (the COPY
/// text format). Uses the thread-local CSPRNG (ChaCha, seeded from the OS), so keys are neither
/// sequential nor predictable from earlier ones, and never derived from a URL.
pub fn generate_keys_into(out: &mut String, count: usize, length: usize) {
    let mut rng = rand::rng();
    out.reserve(count * (length + 1));
    for _ in 0..count {
        Alphanumeric.append_string(&mut rng, out, length);
        out.push('\n');
    }
}

/// One random key (tests and tools).
pub fn generate_key(length: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_base62_of_the_requested_length() {
        let mut out = String::new();
        generate_keys_into(&mut out, 1_000, 7);
        let keys: Vec<&str> = out.lines().collect();
        assert_eq!(keys.len(), 1_000);
        assert!(
            keys.iter()
                .all(|k| k.len() == 7 && k.bytes().all(|b| b.is_ascii_alphanumeric()))
        );
    }

    #[test]
    fn generated_keys_are_not_sequential_or_repeated() {
        let mut out = String::new();
        generate_keys_into(&mut out, 10_000, 7);
        let mut keys: Vec<&str> = out.lines().collect();
        let in_order = keys.windows(2).filter(|w| w[0] < w[1]).count();
        // Random keys are in ascending order about half the time; sequential ones always.
        assert!(
            (4_000..6_000).contains(&in_order),
            "{in_order} ascending pairs"
        );
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 10_000);
    }

    #[test]
    fn well_formed_codes() {
        assert!(is_well_formed("aZ0"));
        assert!(is_well_formed("my-alias_2"));
        assert!(is_well_formed(&"a".repeat(64)));
        assert!(!is_well_formed("ab"));
        assert!(!is_well_formed(&"a".repeat(65)));
        assert!(!is_well_formed("abc.def"));
        assert!(!is_well_formed("abc%20"));
        assert!(!is_well_formed("ábc"));
    }
}
