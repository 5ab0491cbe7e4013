//! `otpauth://totp/…` URIs (Google's Key URI format), the text inside every
//! authenticator QR code: built by `otp2mqtt token`, parsed for anything that
//! imports one.
//!
//! Format: `otpauth://totp/ISSUER:ACCOUNT?secret=BASE32&issuer=ISSUER&algorithm=SHA1&digits=6&period=30`.
//! Pure: no I/O. Errors never contain the secret, nor the URI (which holds it).

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::config::{DEFAULT_DIGITS, DEFAULT_PERIOD, MAX_PERIOD};
use crate::secret::{SecretError, SecretString, decode_base32_secret};
use crate::sensor::Algorithm;

/// Everything but RFC 3986's unreserved characters is percent-encoded, in the
/// label and in parameter values alike: spaces become `%20` (never `+`, which
/// some apps show literally) and a `:` inside an issuer or account becomes `%3A`
/// so it cannot be mistaken for the separator.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One TOTP account as an authenticator app stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpauthUri {
    /// Who issued the account ("Home Assistant"); apps group and label by it.
    pub issuer: Option<String>,
    /// The account name shown under the issuer.
    pub account: String,
    /// The base32 shared secret, as it appears in the URI. Already checked to
    /// decode (at least 80 bits) when it came from [`parse`].
    pub secret: SecretString,
    pub digits: u8,
    /// Step length in seconds.
    pub period: u64,
    pub algorithm: Algorithm,
}

/// Why a URI was refused. No variant carries the secret or the whole URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtpauthError {
    #[error("is not an otpauth URI: it must start with otpauth://totp/")]
    NotOtpauth,
    #[error(
        "is an HOTP (counter-based) URI: otp2mqtt publishes time-based codes and needs an otpauth://totp/ URI"
    )]
    Hotp,
    #[error("has the unknown OTP type '{0}': only otpauth://totp/ is supported")]
    UnknownType(String),
    #[error("has no account name in its label (otpauth://totp/ISSUER:ACCOUNT?…)")]
    MissingAccount,
    #[error("has no secret= parameter")]
    MissingSecret,
    #[error("has the parameter '{0}' more than once")]
    DuplicateParameter(String),
    #[error("has a malformed parameter (expected NAME=VALUE between '&')")]
    MalformedParameter,
    #[error("has invalid percent-encoding in its {0} (not UTF-8)")]
    BadEncoding(&'static str),
    #[error("has a secret that {0}")]
    Secret(SecretError),
    #[error("has digits={0}: must be 6, 7 or 8")]
    Digits(String),
    #[error("has period={0}: must be 1 to {MAX_PERIOD} seconds")]
    Period(String),
    #[error("has algorithm={0}: must be SHA1, SHA256 or SHA512")]
    Algorithm(String),
}

impl OtpauthUri {
    /// The URI, with every field percent-encoded. Contains the secret: for the
    /// user's eyes (and their phone's camera) only.
    pub fn to_uri(&self) -> String {
        let encode = |text: &str| utf8_percent_encode(text, COMPONENT).to_string();
        let mut uri = String::from("otpauth://totp/");
        if let Some(issuer) = &self.issuer {
            uri.push_str(&encode(issuer));
            uri.push(':');
        }
        uri.push_str(&encode(&self.account));
        uri.push_str("?secret=");
        uri.push_str(&encode(self.secret.expose()));
        if let Some(issuer) = &self.issuer {
            uri.push_str("&issuer=");
            uri.push_str(&encode(issuer));
        }
        // Writing to a String cannot fail.
        let _ = write!(
            uri,
            "&algorithm={}&digits={}&period={}",
            self.algorithm.as_str(),
            self.digits,
            self.period
        );
        uri
    }
}

/// Parses an `otpauth://totp/` URI, checking every field the way the config
/// checks a sensor (secret of at least 80 bits, digits 6–8, period 1–3600 s,
/// SHA1/SHA256/SHA512). Missing optional parameters take the Key URI format's
/// defaults (SHA1, 6 digits, 30 s).
///
/// Lenient where real-world URIs vary: scheme, type and parameter names in any
/// case; `+` in a parameter value reads as a space (form encoding, as Python's
/// `urlencode` writes it); unknown parameters (`image`, `color`…) are ignored;
/// when the label's issuer prefix and the `issuer` parameter differ, the
/// parameter wins, as in Google Authenticator. The label's issuer ends at the
/// first literal `:`; an encoded `%3A` is part of the text.
pub fn parse(uri: &str) -> Result<OtpauthUri, OtpauthError> {
    let uri = uri.trim();
    let rest = strip_prefix_ignore_case(uri, "otpauth://").ok_or(OtpauthError::NotOtpauth)?;
    let (kind, rest) = rest.split_once('/').ok_or(OtpauthError::NotOtpauth)?;
    if kind.eq_ignore_ascii_case("hotp") {
        return Err(OtpauthError::Hotp);
    }
    if !kind.eq_ignore_ascii_case("totp") {
        return Err(OtpauthError::UnknownType(kind.chars().take(20).collect()));
    }
    let (label, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (label_issuer, account) = match label.split_once(':') {
        Some((issuer, account)) => (Some(decode(issuer, "label", false)?), account),
        None => (None, label),
    };
    // The format allows spaces between the separator and the account.
    let account = decode(account, "label", false)?.trim().to_string();
    if account.is_empty() {
        return Err(OtpauthError::MissingAccount);
    }

    let mut secret = None;
    let mut issuer_parameter = None;
    let mut digits = None;
    let mut period = None;
    let mut algorithm = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or(OtpauthError::MalformedParameter)?;
        let slot = match name.to_ascii_lowercase().as_str() {
            "secret" => &mut secret,
            "issuer" => &mut issuer_parameter,
            "digits" => &mut digits,
            "period" => &mut period,
            "algorithm" => &mut algorithm,
            _ => continue,
        };
        if slot.is_some() {
            return Err(OtpauthError::DuplicateParameter(name.to_ascii_lowercase()));
        }
        let field = if name.eq_ignore_ascii_case("secret") {
            "secret"
        } else {
            "parameters"
        };
        *slot = Some(decode(value, field, true)?);
    }

    let secret = SecretString::new(secret.ok_or(OtpauthError::MissingSecret)?);
    decode_base32_secret(secret.expose()).map_err(OtpauthError::Secret)?;
    let digits = match digits {
        None => DEFAULT_DIGITS,
        Some(text) => text
            .parse::<u8>()
            .ok()
            .filter(|digits| (6..=8).contains(digits))
            .ok_or_else(|| OtpauthError::Digits(shorten(&text)))?,
    };
    let period = match period {
        None => DEFAULT_PERIOD,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|period| (1..=MAX_PERIOD).contains(period))
            .ok_or_else(|| OtpauthError::Period(shorten(&text)))?,
    };
    let algorithm = match algorithm {
        None => Algorithm::Sha1,
        Some(text) => text
            .parse::<Algorithm>()
            .map_err(|_| OtpauthError::Algorithm(shorten(&text)))?,
    };
    let issuer = issuer_parameter
        .or(label_issuer)
        .map(|issuer| issuer.trim().to_string())
        .filter(|issuer| !issuer.is_empty());
    Ok(OtpauthUri {
        issuer,
        account,
        secret,
        digits,
        period,
        algorithm,
    })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Percent-decodes one component; `plus_is_space` for query values.
fn decode(text: &str, field: &'static str, plus_is_space: bool) -> Result<String, OtpauthError> {
    let text = if plus_is_space {
        text.replace('+', " ")
    } else {
        text.to_string()
    };
    percent_decode_str(&text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| OtpauthError::BadEncoding(field))
}

/// A user-supplied (non-secret) value, cut short so a pasted blob cannot flood
/// the message.
fn shorten(text: &str) -> String {
    const LIMIT: usize = 20;
    if text.chars().count() > LIMIT {
        format!("{}…", text.chars().take(LIMIT).collect::<String>())
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    fn example() -> OtpauthUri {
        OtpauthUri {
            issuer: Some("Home Assistant".into()),
            account: "Front Door".into(),
            secret: SecretString::new(SECRET),
            digits: 6,
            period: 30,
            algorithm: Algorithm::Sha1,
        }
    }

    #[test]
    fn builds_the_key_uri_format() {
        assert_eq!(
            example().to_uri(),
            format!(
                "otpauth://totp/Home%20Assistant:Front%20Door?secret={SECRET}&issuer=Home%20Assistant&algorithm=SHA1&digits=6&period=30"
            )
        );
        let without_issuer = OtpauthUri {
            issuer: None,
            ..example()
        };
        assert!(without_issuer.to_uri().starts_with(&format!(
            "otpauth://totp/Front%20Door?secret={SECRET}&algorithm="
        )));
    }

    #[test]
    fn round_trips_awkward_text() {
        for (issuer, account) in [
            ("Home Assistant", "Front Door"),
            ("A:B & C", "alice@example.com"),
            ("Ünïcødé ✓", "x:y?z=1&w#2 %41+"),
        ] {
            let original = OtpauthUri {
                issuer: Some(issuer.into()),
                account: account.into(),
                digits: 8,
                period: 60,
                algorithm: Algorithm::Sha512,
                ..example()
            };
            let uri = original.to_uri();
            assert!(uri.is_ascii() && !uri.contains(' '), "{uri}");
            assert_eq!(parse(&uri).unwrap(), original, "{uri}");
        }
    }

    #[test]
    fn parses_google_and_pyotp_style_uris_with_defaults() {
        let parsed =
            parse("otpauth://totp/Example:alice@google.com?secret=JBSWY3DPEHPK3PXP&issuer=Example")
                .unwrap();
        assert_eq!(parsed.issuer.as_deref(), Some("Example"));
        assert_eq!(parsed.account, "alice@google.com");
        assert_eq!(parsed.secret.expose(), "JBSWY3DPEHPK3PXP");
        assert_eq!(
            (parsed.digits, parsed.period, parsed.algorithm),
            (6, 30, Algorithm::Sha1)
        );

        let parsed = parse(
            "OTPAUTH://TOTP/ACME%20Co:%20john.doe@email.com?Secret=HXDMVJECJJWSRB3HWIZR4IFUGFTMXBOZ&Issuer=ACME+Co&Algorithm=sha256&Digits=7&Period=45&image=https%3A%2F%2Fx",
        )
        .unwrap();
        assert_eq!(parsed.issuer.as_deref(), Some("ACME Co"));
        assert_eq!(parsed.account, "john.doe@email.com");
        assert_eq!(
            (parsed.digits, parsed.period, parsed.algorithm),
            (7, 45, Algorithm::Sha256)
        );
    }

    #[test]
    fn issuer_comes_from_the_parameter_then_the_label() {
        let from_label = parse("otpauth://totp/Label%20Co:bob?secret=JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(from_label.issuer.as_deref(), Some("Label Co"));
        let both = parse("otpauth://totp/Label:bob?secret=JBSWY3DPEHPK3PXP&issuer=Param").unwrap();
        assert_eq!(both.issuer.as_deref(), Some("Param"));
        let none = parse("otpauth://totp/bob?secret=JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!((none.issuer, none.account.as_str()), (None, "bob"));
    }

    #[test]
    fn refuses_what_is_not_a_usable_totp_uri_without_echoing_the_secret() {
        let secret = "JBSWY3DPEHPK3PXP";
        let cases = [
            (
                format!("otpauth://hotp/x?secret={secret}&counter=1"),
                "HOTP",
            ),
            (
                format!("https://totp/x?secret={secret}"),
                "not an otpauth URI",
            ),
            (
                format!("otpauth:totp/x?secret={secret}"),
                "not an otpauth URI",
            ),
            (
                format!("otpauth://steam/x?secret={secret}"),
                "unknown OTP type 'steam'",
            ),
            (format!("otpauth://totp/?secret={secret}"), "no account"),
            (
                format!("otpauth://totp/Issuer:?secret={secret}"),
                "no account",
            ),
            ("otpauth://totp/x?issuer=a".to_string(), "no secret"),
            ("otpauth://totp/x".to_string(), "no secret"),
            (
                format!("otpauth://totp/x?secret={secret}&secret={secret}"),
                "more than once",
            ),
            (
                format!("otpauth://totp/x?secret={secret}&digits"),
                "malformed parameter",
            ),
            (
                format!("otpauth://totp/x?secret={secret}&digits=9"),
                "digits=9",
            ),
            (
                format!("otpauth://totp/x?secret={secret}&digits=six"),
                "digits=six",
            ),
            (
                format!("otpauth://totp/x?secret={secret}&period=0"),
                "period=0",
            ),
            (
                format!("otpauth://totp/x?secret={secret}&period=-30"),
                "period=-30",
            ),
            (
                format!("otpauth://totp/x?secret={secret}&algorithm=MD5"),
                "algorithm=MD5",
            ),
            (
                format!("otpauth://totp/%FF?secret={secret}"),
                "percent-encoding in its label",
            ),
            (
                "otpauth://totp/x?secret=JBSWY3DPEHPK3PX1".to_string(),
                "secret that is not valid base32",
            ),
            (
                "otpauth://totp/x?secret=JBSWY3DP".to_string(),
                "secret that is too short",
            ),
            (
                "otpauth://totp/x?secret=%FFJBSWY3DPEHPK3PXP".to_string(),
                "percent-encoding in its secret",
            ),
        ];
        for (uri, expected) in cases {
            let message = parse(&uri).unwrap_err().to_string();
            assert!(message.contains(expected), "{uri}: {message}");
            assert!(!message.contains("JBSWY3DP"), "secret leaked: {message}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let debug = format!("{:?}", example());
        assert!(!debug.contains("JBSW"), "{debug}");
    }
}
