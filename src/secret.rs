//! Secrets (TOTP shared secrets, broker passwords) in a type that never shows them.
//!
//! Everything that holds a secret goes through [`SecretString`]: its `Debug` and
//! `Display` print a fixed placeholder, and its memory is wiped on drop, so a
//! stray `{:?}` in a log line or an error message cannot leak a door code's seed.

use std::fmt;

use serde::Deserialize;
use zeroize::Zeroizing;

/// A secret string from the config. Read it only through [`SecretString::expose`].
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret itself. Call sites are few and easy to audit with `grep expose`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a base32 shared secret was refused. No variant carries the secret or a piece of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("is empty")]
    Empty,
    #[error(
        "is not valid base32: character {position} is not one of A-Z or 2-7 (spaces, dashes and '=' padding are allowed)"
    )]
    NotBase32 { position: usize },
    #[error(
        "is not valid base32: {chars} characters cannot encode whole bytes (a character is missing or extra)"
    )]
    ImpossibleLength { chars: usize },
    #[error("is too short: {bits} bits, at least 80 bits (16 base32 characters) are needed")]
    TooShort { bits: usize },
}

/// Secrets shorter than this are refused: RFC 4226 section 4 requires 128 bits and
/// recommends 160, but Home Assistant's own docs and many services hand out 80-bit
/// secrets, so 80 is the floor and anything under 128 only gets a warning.
pub const MIN_SECRET_BITS: usize = 80;
/// Secrets under this size work but are weaker than RFC 4226 requires.
pub const RECOMMENDED_SECRET_BITS: usize = 128;

/// Decodes a base32 secret the way phones and Home Assistant (pyotp) accept it: any
/// case, spaces and dashes anywhere, with or without `=` padding.
pub fn decode_base32_secret(input: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let mut normalized = Zeroizing::new(String::with_capacity(input.len()));
    for (index, character) in input.chars().enumerate() {
        match character {
            ' ' | '\t' | '-' | '=' => {}
            'a'..='z' | 'A'..='Z' | '2'..='7' => normalized.push(character.to_ascii_uppercase()),
            _ => {
                return Err(SecretError::NotBase32 {
                    position: index + 1,
                });
            }
        }
    }
    let chars = normalized.len();
    if chars == 0 {
        return Err(SecretError::Empty);
    }
    // Eight base32 characters carry five bytes; a final group of 1, 3 or 6
    // characters leaves bits over that belong to no byte, which is a typo (pyotp
    // refuses it too), not a secret.
    if matches!(chars % 8, 1 | 3 | 6) {
        return Err(SecretError::ImpossibleLength { chars });
    }
    let bits = chars * 5 / 8 * 8;
    if bits < MIN_SECRET_BITS {
        return Err(SecretError::TooShort { bits });
    }
    let bytes = totp_rs::Secret::try_from_base32(normalized.as_str())
        // Every character was checked above and the length is possible, so the
        // decoder has nothing left to refuse; map the error anyway rather than panic.
        .map_err(|_| SecretError::ImpossibleLength { chars })?;
    Ok(Zeroizing::new(bytes.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_secret() {
        let secret = SecretString::new("JBSWY3DPEHPK3PXP");
        assert!(!format!("{secret:?}").contains("JBSW"));
        assert!(!format!("{secret}").contains("JBSW"));
        assert_eq!(secret.expose(), "JBSWY3DPEHPK3PXP");
    }

    #[test]
    fn accepts_what_phones_accept() {
        let canonical = decode_base32_secret("IHEDPEBEVA2WVHB7").unwrap();
        assert_eq!(canonical.len(), 10);
        for variant in [
            "ihedpebeva2wvhb7",
            "IHED PEBE VA2W VHB7",
            "ihed-pebe-va2w-vhb7",
            "IHEDPEBEVA2WVHB7======",
        ] {
            assert_eq!(
                decode_base32_secret(variant).unwrap(),
                canonical,
                "{variant}"
            );
        }
    }

    #[test]
    fn padded_rfc_seed_decodes_to_its_bytes() {
        let bytes =
            decode_base32_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA====")
                .unwrap();
        assert_eq!(bytes.as_slice(), b"12345678901234567890123456789012");
    }

    #[test]
    fn refuses_bad_secrets_without_echoing_them() {
        assert_eq!(decode_base32_secret(""), Err(SecretError::Empty));
        assert_eq!(decode_base32_secret(" = "), Err(SecretError::Empty));
        assert_eq!(
            decode_base32_secret("IHEDPEBEVA2WVHB1"),
            Err(SecretError::NotBase32 { position: 16 })
        );
        assert_eq!(
            decode_base32_secret("IHEDPEBEVA2WVHB7A"),
            Err(SecretError::ImpossibleLength { chars: 17 })
        );
        // 72 bits: one base32 group short of Home Assistant's 80-bit example.
        assert_eq!(
            decode_base32_secret("IHEDPEBEVA2WV"),
            Err(SecretError::TooShort { bits: 64 })
        );
        let message = decode_base32_secret("IHEDPEBEVA2WVHB!")
            .unwrap_err()
            .to_string();
        assert!(!message.contains("IHED"), "{message}");
    }
}
