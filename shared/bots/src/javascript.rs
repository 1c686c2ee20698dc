//! isbot's patterns are JavaScript regular expressions, used with the flag `i` and without
//! `u`. `regex` in ASCII mode reads nearly the same syntax with nearly the same meaning:
//! `\w`, `\d` and `\b` are ASCII in both, and so is case folding (JavaScript never folds a
//! non-ASCII character onto an ASCII one without `u`). [`translate`] mends the rest, and
//! refuses what it cannot mend, so that a new pattern fails the tests instead of matching
//! something else than in isbot.

use std::fmt;

/// The white space JavaScript's `\s` matches beyond ASCII (U+00A0, U+1680, U+2000 to
/// U+200A, U+2028, U+2029, U+202F, U+205F, U+3000 and U+FEFF), as UTF-8 bytes: in ASCII mode
/// `regex`'s `\s` is only `[\t\n\v\f\r ]`.
const WIDE_SPACE: &str =
    r"\xC2\xA0|\xE1\x9A\x80|\xE2\x80[\x80-\x8A\xA8\xA9\xAF]|\xE2\x81\x9F|\xE3\x80\x80|\xEF\xBB\xBF";

/// Why a pattern cannot be handed to `regex` as it is: hand-code it (see `hand_coded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsupported {
    /// A non-ASCII character: its case folding differs between the two.
    NotAscii,
    /// `(?=`, `(?!`, `(?<=` or `(?<!`, which `regex` does not have.
    LookAround,
    /// `\S`, or `\s` in a negated class: they would have to leave out multi-byte spaces.
    NegatedSpace,
    /// `[]` or `[^]`: in JavaScript nothing or anything, in `regex` the start of a class
    /// that holds `]`.
    EmptyClass,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAscii => "a non-ASCII character",
            Self::LookAround => "a look-ahead or look-behind",
            Self::NegatedSpace => "a negated \\s",
            Self::EmptyClass => "an empty class",
        })
    }
}

/// The same pattern in `regex` syntax, for a regex built with `unicode(false)` and
/// `case_insensitive(true)`. What changes: `\s` also matches JavaScript's non-ASCII spaces,
/// and inside a class `[`, `&` and `~` are escaped (`regex` reads `[` as a nested class and
/// `&&`, `~~` as set operations), as is a `-` after a class escape (JavaScript reads `[\d-.]`
/// as a digit, a hyphen or a dot; `regex` would refuse the range).
pub(crate) fn translate(js: &str) -> Result<String, Unsupported> {
    if !js.is_ascii() {
        return Err(Unsupported::NotAscii);
    }
    let mut out = String::with_capacity(js.len() + 16);
    let mut chars = js.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 's')) => {
                    out.push_str(r"(?:\s|");
                    out.push_str(WIDE_SPACE);
                    out.push(')');
                }
                Some((_, 'S')) => return Err(Unsupported::NegatedSpace),
                Some((_, escaped)) => {
                    out.push('\\');
                    out.push(escaped);
                }
                // A trailing backslash: `regex` reports it.
                None => out.push('\\'),
            },
            '(' if ["(?=", "(?!", "(?<=", "(?<!"]
                .iter()
                .any(|start| js[at..].starts_with(start)) =>
            {
                return Err(Unsupported::LookAround);
            }
            '[' => translate_class(&mut chars, &mut out)?,
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Reads one class, its `[` already taken, and writes it to `out`.
fn translate_class(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    out: &mut String,
) -> Result<(), Unsupported> {
    let negated = chars.next_if(|&(_, c)| c == '^').is_some();
    if chars.peek().is_some_and(|&(_, c)| c == ']') {
        return Err(Unsupported::EmptyClass);
    }
    let mut body = String::from(if negated { "[^" } else { "[" });
    let mut has_space = false;
    let mut after_class_escape = false;
    while let Some((_, c)) = chars.next() {
        let hyphen_is_literal = std::mem::take(&mut after_class_escape);
        match c {
            ']' => {
                body.push(']');
                if !has_space {
                    out.push_str(&body);
                } else if negated {
                    return Err(Unsupported::NegatedSpace);
                } else {
                    out.push_str("(?:");
                    out.push_str(&body);
                    out.push('|');
                    out.push_str(WIDE_SPACE);
                    out.push(')');
                }
                return Ok(());
            }
            '\\' => {
                // A lone backslash at the end of the pattern is left for `regex` to report.
                let Some((_, escaped)) = chars.next() else {
                    body.push('\\');
                    break;
                };
                if escaped == 'S' {
                    return Err(Unsupported::NegatedSpace);
                }
                has_space |= escaped == 's';
                after_class_escape = matches!(escaped, 'w' | 'W' | 'd' | 'D' | 's');
                body.push('\\');
                body.push(escaped);
            }
            '-' if hyphen_is_literal => body.push_str(r"\-"),
            '[' | '&' | '~' => {
                body.push('\\');
                body.push(c);
            }
            other => body.push(other),
        }
    }
    // No closing bracket: `regex` reports it.
    out.push_str(&body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::compile;

    fn matches(js: &str, text: &str) -> bool {
        let rust = translate(js).expect("translates");
        compile(&rust).expect("compiles").is_match(text.as_bytes())
    }

    #[test]
    fn patterns_without_javascript_only_meaning_pass_unchanged() {
        for js in [
            r"\bperl\b",
            r"^mozilla/\d\.\d",
            r"^[\w\-]+/[\w]+$",
            "ptst[ /]\\d",
        ] {
            assert_eq!(translate(js).as_deref(), Ok(js));
        }
    }

    #[test]
    fn s_outside_a_class_also_matches_non_ascii_spaces() {
        assert!(matches(r";\s\w+;$", "; x;"));
        assert!(matches(r";\s\w+;$", ";\u{a0}x;"));
        assert!(matches(r";\s\w+;$", ";\u{2009}x;"));
        assert!(matches(r";\s\w+;$", ";\u{feff}x;"));
        assert!(!matches(r";\s\w+;$", ";\u{85}x;"));
        assert!(!matches(r";\s\w+;$", ";_x;"));
    }

    #[test]
    fn s_inside_a_class_also_matches_non_ascii_spaces() {
        assert!(matches(r"^a[\s/]b$", "a/b"));
        assert!(matches(r"^a[\s/]b$", "a\u{3000}b"));
        assert!(!matches(r"^a[\s/]b$", "a-b"));
    }

    #[test]
    fn hyphen_after_a_class_escape_is_a_literal_hyphen() {
        // JavaScript reads `[\d-.]` as a digit, a hyphen or a dot.
        assert!(matches(r"^[\w\d-.]+$", "a-1.b"));
        assert!(!matches(r"^[\w\d-.]+$", "a,b"));
    }

    #[test]
    fn class_set_operators_are_literal_characters() {
        assert!(matches(r"^[a&&b]$", "&"));
        assert!(matches(r"^[a~~b]$", "~"));
        assert!(matches(r"^[[]$", "["));
    }

    #[test]
    fn look_around_is_refused() {
        for js in ["a(?=b)", "a(?!b)", "(?<=a)b", "(?<!a)b"] {
            assert_eq!(translate(js), Err(Unsupported::LookAround), "{js}");
        }
    }

    #[test]
    fn negated_spaces_are_refused() {
        assert_eq!(translate(r"a\Sb"), Err(Unsupported::NegatedSpace));
        assert_eq!(translate(r"a[^\s]b"), Err(Unsupported::NegatedSpace));
        assert_eq!(translate(r"a[\S]b"), Err(Unsupported::NegatedSpace));
    }

    #[test]
    fn non_ascii_patterns_are_refused() {
        assert_eq!(translate("café"), Err(Unsupported::NotAscii));
    }

    #[test]
    fn empty_classes_are_refused() {
        assert_eq!(translate("a[]b"), Err(Unsupported::EmptyClass));
        assert_eq!(translate("a[^]b"), Err(Unsupported::EmptyClass));
    }
}
