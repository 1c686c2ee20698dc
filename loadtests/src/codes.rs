//! The code list (`--codes`) and random codes for `redirect-miss`.

use std::path::{Path, PathBuf};

use rand::{Rng, RngExt};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of a generated Kurz code.
pub const CODE_LEN: usize = 7;

#[derive(Debug, thiserror::Error)]
pub enum CodesError {
    #[error("reading the code list {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line} of the code list: `{text}` is not a code ([A-Za-z0-9_-]{{3,64}})")]
    Invalid { line: usize, text: String },
}

/// Reads a code list: one code per line; blank lines are skipped.
pub fn load_codes(path: &Path) -> Result<Vec<String>, CodesError> {
    let text = std::fs::read_to_string(path).map_err(|source| CodesError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_codes(&text)
}

/// Parses a code list, checking every line up front so that a bad file stops the run at start
/// rather than showing up as a run of 404s.
pub fn parse_codes(text: &str) -> Result<Vec<String>, CodesError> {
    let mut codes = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let code = line.trim();
        if code.is_empty() {
            continue;
        }
        if !is_code(code) {
            return Err(CodesError::Invalid {
                line: index + 1,
                text: code.chars().take(80).collect(),
            });
        }
        codes.push(code.to_owned());
    }
    Ok(codes)
}

/// Whether `text` can be a Kurz code or alias: `[A-Za-z0-9_-]{3,64}`.
pub fn is_code(text: &str) -> bool {
    (3..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A well-formed random 7-character base62 code. There are 62^7 (about 3.5e12) of them, so with
/// a million links stored a random one exists with a probability under 1 in 3 million.
pub fn random_code<R: Rng + ?Sized>(rng: &mut R) -> String {
    (0..CODE_LEN)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn code_lists_skip_blank_lines_and_trim() {
        let codes = parse_codes("abc1234\n\n  xyz_-9  \r\nQQQ\n").expect("valid list");
        assert_eq!(codes, ["abc1234", "xyz_-9", "QQQ"]);
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let err = parse_codes("abc1234\nno spaces\n").expect_err("invalid list");
        assert!(matches!(err, CodesError::Invalid { line: 2, .. }), "{err}");
        assert!(parse_codes("ab\n").is_err(), "two characters is too short");
    }

    #[test]
    fn random_codes_are_seven_base62_characters() {
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..1000 {
            let code = random_code(&mut rng);
            assert_eq!(code.len(), CODE_LEN);
            assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()), "{code}");
        }
    }
}
