//! The API key format, after GitHub's token format.
//!
//! `kurz_` + 43 random base62 characters (256 bits from the thread-local CSPRNG) + 6 base62
//! characters of CRC-32 over everything before them. The prefix lets secret scanners find
//! leaked keys; the checksum lets a client, a scanner or the service reject a mistyped or
//! made-up key without a lookup. Only the SHA-256 digest of a key is ever stored.

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest as _, Sha256};

/// What every key starts with.
pub const PREFIX: &str = "kurz_";
/// Random characters: 43 × log2(62) ≈ 256.03 bits.
const RANDOM_LEN: usize = 43;
/// CRC-32 in base62: 62^6 > 2^32.
const CHECKSUM_LEN: usize = 6;
/// Length of every key.
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// Characters of the key kept as its display hint (`kurz_AbC1`): enough to tell keys apart,
/// far too few to help guessing.
const HINT_LEN: usize = PREFIX.len() + 4;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// SHA-256 of a key: what the database stores and looks keys up by.
pub type KeyDigest = [u8; 32];

/// A freshly minted key. `Debug` never shows the key itself.
pub struct MintedKey {
    key: String,
}

impl std::fmt::Debug for MintedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedKey")
            .field("hint", &self.hint())
            .finish_non_exhaustive()
    }
}

impl MintedKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut key = String::with_capacity(KEY_LEN);
        key.push_str(PREFIX);
        Alphanumeric.append_string(&mut rand::rng(), &mut key, RANDOM_LEN);
        let checksum = checksum(&key);
        key.push_str(&checksum);
        Self { key }
    }

    /// The key, to be shown once to whoever asked for it.
    pub fn expose(&self) -> &str {
        &self.key
    }

    pub fn digest(&self) -> KeyDigest {
        digest(&self.key)
    }

    pub fn hint(&self) -> String {
        hint(&self.key)
    }
}

/// Why a presented key was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("not a Kurz API key (they start with `kurz_` and are {KEY_LEN} characters)")]
    Malformed,
    #[error("the API key's checksum does not match (mistyped or truncated?)")]
    BadChecksum,
}

/// Checks a presented key's shape and checksum, and returns its digest for the lookup.
pub fn verify_format(key: &str) -> Result<KeyDigest, KeyFormatError> {
    let body = key.strip_prefix(PREFIX).ok_or(KeyFormatError::Malformed)?;
    if key.len() != KEY_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Malformed);
    }
    let (signed, sum) = key.split_at(KEY_LEN - CHECKSUM_LEN);
    if checksum(signed) != sum {
        return Err(KeyFormatError::BadChecksum);
    }
    Ok(digest(key))
}

/// The display hint of a key: its first characters and an ellipsis.
pub fn hint(key: &str) -> String {
    let head = key.get(..HINT_LEN).unwrap_or(key);
    format!("{head}…")
}

fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

fn checksum(signed: &str) -> String {
    let mut n = crc32fast::hash(signed.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_have_the_documented_shape_and_verify() {
        let key = MintedKey::generate();
        let raw = key.expose();
        assert_eq!(raw.len(), KEY_LEN);
        assert!(raw.starts_with("kurz_"));
        assert_eq!(verify_format(raw), Ok(key.digest()));
        assert!(key.hint().starts_with(&raw[..9]) && key.hint().ends_with('…'));
    }

    #[test]
    fn keys_are_unique() {
        let a = MintedKey::generate();
        let b = MintedKey::generate();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let key = MintedKey::generate();
        let mut chars: Vec<char> = key.expose().chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(verify_format(&typo), Err(KeyFormatError::BadChecksum));
    }

    #[test]
    fn other_strings_are_malformed() {
        let key = MintedKey::generate();
        for bad in [
            "",
            "kurz_",
            "ghp_0123456789",
            &key.expose()[..KEY_LEN - 1],
            &format!("{}x", key.expose()),
            &key.expose().replace("kurz_", "KURZ_"),
            &format!("kurz_{}", "é".repeat(24)),
        ] {
            assert_eq!(verify_format(bad), Err(KeyFormatError::Malformed), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = MintedKey::generate();
        assert!(!format!("{key:?}").contains(key.expose()));
    }
}
